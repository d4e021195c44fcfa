from typing import Any


def add_convert_commands(commands: Any) -> None:
    pass
