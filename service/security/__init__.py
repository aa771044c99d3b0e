"""Security and tenancy: API keys (`keys`, `keystore`), tenant policies (`policy`),
per-tenant limits (`limits`, `redis_limits`), request limits (`request_limits`)."""
