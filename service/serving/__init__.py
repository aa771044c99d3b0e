"""What every endpoint shares beneath HTTP: the request's typed context, the tenant
gate, and the one path a generation takes through the queue (submit and collect)."""
