"""The service's shared vocabulary: lanes, generation requests and events, jobs.

Every layer (api, media, queue, redis, engines, worker, security) speaks these
types; this package imports nothing from the service but `errors`.
"""
