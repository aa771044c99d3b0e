"""The browser console's static files (`static/`), served at `/ui/` by `service.api.console`."""
