# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-cli.md
"""The commands of ``tinytransformer``, one module each, on top of the library;
``cli.py`` puts them together."""
