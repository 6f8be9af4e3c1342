"""Pure, I/O-free protocol and engine logic.

Nothing here may import trio, sockets, the clock or randomness, nor any other
qflow_node subpackage except `qflow_node.codec` (pure encoding). Time and events come
in as arguments; decisions come out as values. `tests/test_layout.py` enforces this.
"""
