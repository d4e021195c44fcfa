"""The multi-process layout: a supervisor, N front ends and one engine, and the link between them."""
