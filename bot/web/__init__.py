"""The local web chat and the service's HTTP basics (`/healthz`, `/metrics`) inside `kb serve`."""
