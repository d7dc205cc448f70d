# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-cli.md
from tinytransformer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
