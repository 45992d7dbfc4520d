"""The command line of cvt-convert: option parsing and error reporting around the library.

`convert.py` at the repository root is the entry point.
"""
