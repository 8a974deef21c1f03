"""python -m segkit <command> ...: the `segkit` console command (segkit.cli)."""

from segkit.cli import main

main()
