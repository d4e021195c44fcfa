from typing import Any


def add_gpu_check_command(commands: Any) -> None:
    pass
