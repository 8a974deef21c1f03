"""What every layer of segkit may use, standard library only: value checks written once (`checks`), optional
dependencies (`extras`), glibc's allocation settings (`allocator`) and ImageNet's statistics (`imagenet`)."""
