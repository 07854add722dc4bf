"""The commands, one module each with a linear `main(argv)`: the only layer that sees every other one."""
