"""A stage's notebook run and tidied in one process:

    python -m kit_tools.execute NOTEBOOK OUTPUT [papermill's options, e.g. -p dataset digits]

is papermill's own command line (``papermill NOTEBOOK OUTPUT ...``, the same options, output and
errors) followed by ``tidy`` on OUTPUT, which is what every notebook stage of dvc.yaml runs.
Against ``papermill ... && python -m kit_tools.tidy ...`` it saves, per stage, a second
interpreter and two imports of nbformat, each of which builds the IRI grammars of jsonschema's
optional format checker (rfc3987-syntax, which jupyterlab's jupyter-events pulls in: about 0.7 s
on the 2-core machine, python-jsonschema/jsonschema#1428); no notebook schema checks IRI formats,
so those checkers are left out (``skip_iri_grammar``). Once the last cell has run and its outputs
are in OUTPUT, the kernel is stopped at once (nbclient's ``shutdown_kernel="immediate"``) rather
than asked to exit and waited for: the notebooks leave nothing for the kernel's exit to do (every
writer replaces its file before its cell ends), and the polite exit of a kernel that imported torch
costs 1.5-2 s a notebook on the 2-core machine. A failed notebook fails the command with
papermill's own error, and leaves OUTPUT as papermill wrote it.
"""

from __future__ import annotations

import functools
import sys

from .tidy import skip_iri_grammar, tidy_file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or any(a.startswith("-") for a in args[:2]):
        print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
        return 2
    skip_iri_grammar()
    from papermill import cli

    cli.execute_notebook = functools.partial(cli.execute_notebook, shutdown_kernel="immediate")  # an engine option the CLI lacks
    cli.papermill.main(args=args, prog_name="papermill", standalone_mode=False)  # raises papermill's own errors
    tidy_file(args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
