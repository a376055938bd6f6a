"""The admin API under ``/_gateway/``: one module per concern, each an APIRouter that
``app.control.app`` mounts. Everything here is control plane: never on the proxy path."""
