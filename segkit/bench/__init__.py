"""segkit's bench (`python -m segkit.bench`, `segkit.bench.__main__`): `measure` times each model in Lightning
and in the plain loop (`plain_loop`), `loader` the data, `hardware` knows the device, `report` writes the table,
`export` compares ONNX precisions."""
