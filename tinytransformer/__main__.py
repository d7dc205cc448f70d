# Generated from the book by `tinytransformer tangle`: edit book/appendix-cli.md, not this file.
from tinytransformer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
