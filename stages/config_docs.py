"""Write docs/config.md, the table of every config key, from its one declaration (lib/pipeline/config.py).

    make config-docs
    python -m stages.config_docs --out docs/config.md

Each key's type, default, valid values, meaning and whether it is a runtime key, by section. A
test fails when the committed file differs from what this writes.
"""

from pathlib import Path

import click

from lib.console import stage_help
from lib.io import write_if_changed
from lib.pipeline.config_docs import key_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


@click.command(help=stage_help(__doc__))
@click.option("--out", type=click.Path(dir_okay=False), default=str(DOC), show_default=True, help="The file written.")
def main(out):
    changed = write_if_changed(Path(out), key_table())
    print(f"config-docs: {out} {'written' if changed else 'unchanged'}")


if __name__ == "__main__":
    main()
