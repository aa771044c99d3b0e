"""Everything that lives in Redis, in one package: the queue's gateway side
(`gateway_queue`, `inbox`) and worker side (`worker_queue`, `worker_io`), the
per-tenant limits shared by gateway replicas (`tenant_limits`), every key
(`keys`), the Lua scripts (`scripts`) and the wire format (`codec`)."""
