"""One module per `kb` command group; `app.cli` adds each to the root command."""
