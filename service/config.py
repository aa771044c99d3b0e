"""Service configuration: one pydantic-settings object, read from `GMAIVL_*` variables.

CLI flags override the environment; the environment overrides these defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.lanes import Lane


def default_cache_dir() -> Path:
    """The per-user cache (XDG), where the demo checkpoint lives."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gmai-vl"


class ImageLimits(BaseSettings):
    """Limits applied to every image before it is decoded or reaches an engine."""

    model_config = SettingsConfigDict(env_prefix="GMAIVL_IMAGE_", extra="ignore")

    max_images_per_request: int = Field(4, ge=0, description="Images allowed in one request.")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Encoded bytes of one image.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Width x height of one image, checked from the header."
    )
    max_side: int = Field(
        1024, ge=14, description="Long side after normalization (images are downscaled to it)."
    )


class VllmSettings(BaseSettings):
    """vLLM engine arguments (`GMAIVL_VLLM_*`); vLLM's names. Its max_num_seqs is
    `Settings.max_concurrency`, so the worker never takes more than vLLM will batch."""

    model_config = SettingsConfigDict(env_prefix="GMAIVL_VLLM_", extra="ignore")

    dtype: str = Field("auto", description="auto | float16 | bfloat16 | float32.")
    max_model_len: int | None = Field(None, ge=1, description="Context; default: the model's.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split across.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="GPU memory fraction for weights + KV cache."
    )
    kv_cache_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Explicit KV cache size in bytes; on CPU the default fits "
        "max_concurrency sequences of max_model_len tokens.",
    )
    enforce_eager: bool = Field(False, description="No CUDA graphs / compilation.")


class FetchSettings(BaseSettings):
    """Remote image URLs (plain http(s) images; PACS entries add their own host)."""

    model_config = SettingsConfigDict(env_prefix="GMAIVL_FETCH_", extra="ignore")

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or IP literals) plain image URLs may point to; JSON list.",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs where private/loopback addresses are allowed for those hosts.",
    )
    connect_timeout: float = Field(3.0, gt=0, description="Seconds to connect.")
    read_timeout: float = Field(10.0, gt=0, description="Seconds between received bytes.")
    total_timeout: float = Field(20.0, gt=0, description="Seconds for a whole fetch.")
    max_redirects: int = Field(3, ge=0, description="Same-host redirects followed.")


ROUTE_FAMILIES = ("chat", "reads", "pacs", "ops")


class OidcSettings(BaseSettings):
    """Bearer access tokens from the hospital's OpenID Provider (docs/security.md).
    Off unless `issuer` is set; API keys keep working beside tokens."""

    model_config = SettingsConfigDict(env_prefix="GMAIVL_OIDC_", extra="ignore")

    issuer: str | None = Field(
        None,
        description="The IdP's issuer URL, exactly as its tokens' `iss` (discovery at "
        "ISSUER/.well-known/openid-configuration); unset: tokens are not accepted.",
    )
    audience: str | None = Field(
        None, description="The `aud` access tokens must carry: this API's identifier at the IdP."
    )
    tenant_claim: str = Field(
        "groups",
        description="The claim whose values select the tenant; a dotted path reaches nested "
        "claims (realm_access.roles).",
    )
    console_client_id: str | None = Field(
        None,
        description="The public client the console signs in with (code flow + PKCE); its "
        "redirect URI is the console's /ui/ URL. Unset: the console offers API keys only.",
    )
    console_scope: str = Field(
        "openid",
        description="Scopes the console asks for (Entra ID: add the API's scope, "
        "e.g. 'openid api://gmaivl/access').",
    )
    required_scopes: dict[str, str] = Field(
        default_factory=dict,
        description="A scope a token must carry per route family (chat, reads, pacs, ops); "
        'JSON object, e.g. {"reads": "gmaivl.reads"}. Keys have no scopes and are not checked.',
    )
    subject_hash_secret: SecretStr | None = Field(
        None,
        description="HMAC key of the user pseudonym in traces (HMAC-SHA256 of iss and sub); "
        "unset: traces carry no user attribute.",
    )
    leeway: float = Field(
        30.0, ge=0, le=300, description="Seconds of clock skew allowed on exp, nbf and iat."
    )
    jwks_refresh_interval: float = Field(
        30.0,
        ge=0,
        description="Least seconds between two fetches of the IdP's keys (an unknown kid "
        "triggers one).",
    )
    jwks_max_age: float = Field(
        600.0, gt=0, description="Keys older than this are refetched (kept if the IdP is down)."
    )
    max_token_bytes: int = Field(
        8192, ge=512, description="Longest access token accepted (longer ones: 401)."
    )
    verified_cache_size: int = Field(
        4096, ge=0, description="Verified tokens remembered until they expire (0: none)."
    )

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
            raise ValueError("the OIDC issuer is an https URL without query")
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme == "http" and not loopback:
            raise ValueError("the OIDC issuer must be https (http only on loopback, for tests)")
        return value

    @field_validator("required_scopes")
    @classmethod
    def _families(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(ROUTE_FAMILIES)
        if unknown:
            raise ValueError(f"route families are {', '.join(ROUTE_FAMILIES)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> OidcSettings:
        if self.issuer is None:
            return self
        if not self.audience:
            raise ValueError("GMAIVL_OIDC_ISSUER needs GMAIVL_OIDC_AUDIENCE")
        if self.console_client_id is not None and self.console_client_id == self.audience:
            # The console's ID tokens carry its client id as aud: they would pass as access tokens.
            raise ValueError("GMAIVL_OIDC_AUDIENCE must differ from GMAIVL_OIDC_CONSOLE_CLIENT_ID")
        return self

    @property
    def enabled(self) -> bool:
        return self.issuer is not None

    def pseudonym_key(self) -> bytes | None:
        secret = self.subject_hash_secret
        return secret.get_secret_value().encode() if secret is not None else None


class PacsEntry(BaseModel):
    """A PACS reachable over DICOMweb. Image URLs under `base_url` are fetched with
    these credentials; its host is allow-listed for those URLs only."""

    name: str
    base_url: str = Field(description="The DICOMweb root, e.g. https://pacs.example/dicom-web")
    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs the PACS host may resolve into (a hospital LAN); an IP literal "
        "in base_url needs none.",
    )


def _comma_list(value: object) -> object:
    """`A,B , C` -> ["A", "B", "C"]; a list stays a list; empty -> []."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


class DicomNodeSettings(BaseSettings):
    """The DICOM node (`gmai-vl dicom-node`, `gmai-vl serve --dicom-port`; docs/pacs.md):
    a DIMSE SCP receiving studies by C-STORE into a spool, read by routing rules."""

    model_config = SettingsConfigDict(env_prefix="GMAIVL_DICOM_", extra="ignore")

    ae_title: str = Field("GMAIVL", min_length=1, max_length=16, description="Our AE title.")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="DIMSE port; `dicom-node` listens on 11112 when unset, `serve` not at all.",
    )
    host: str = Field("0.0.0.0", description="DIMSE bind address.")
    allowed_calling_aets: CommaList = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate (comma-separated); empty: none.",
    )
    allowed_peer_networks: CommaList = Field(
        default_factory=list,
        description="CIDRs peers may connect from (comma-separated); empty: any address.",
    )
    rules_file: Path | None = Field(
        None, description="Routing rules (YAML); unset: every study is ignored."
    )
    spool_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "dicom-spool",
        description="Where received instances wait for their read (mode 0700).",
    )
    spool_max_bytes: int = Field(
        10 * 1024**3, ge=1, description="Spool quota; beyond it C-STORE answers 0xA700."
    )
    study_quiet_seconds: float = Field(
        30.0, gt=0, description="A study is complete after this long without a new instance."
    )
    spool_retention_seconds: float = Field(
        0.0, ge=0, description="Seconds a study's files stay in the spool after its read ends."
    )
    max_associations: int = Field(16, ge=1, description="Concurrent associations accepted.")
    max_pdu_bytes: int = Field(
        262_144, ge=0, description="Largest P-DATA PDU we receive (0: unlimited)."
    )
    acse_timeout: float = Field(30.0, gt=0, description="Seconds for association messages.")
    dimse_timeout: float = Field(60.0, gt=0, description="Seconds for a DIMSE message.")
    network_timeout: float = Field(60.0, gt=0, description="Idle seconds before a peer is dropped.")
    max_study_instances: int = Field(
        10_000, ge=1, description="Instances one study may hold in the spool."
    )
    tls_cert_file: Path | None = Field(None, description="DICOM TLS: our certificate (PEM).")
    tls_key_file: Path | None = Field(None, description="DICOM TLS: our private key (PEM).")
    tls_ca_file: Path | None = Field(
        None, description="DICOM TLS: CA bundle peers' certificates must chain to (then required)."
    )
    send_max_attempts: int = Field(5, ge=1, description="C-STORE tries of a result SR.")
    send_backoff: float = Field(
        1.0, ge=0, description="Seconds before the second SR send; doubles after each try."
    )

    _lists = field_validator("allowed_calling_aets", "allowed_peer_networks", mode="before")(
        _comma_list
    )


class Settings(BaseSettings):
    """Everything `gmai-vl serve` needs; each field is also `GMAIVL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="GMAIVL_", extra="ignore")

    model: Path | None = Field(
        None, description="Checkpoint directory (HF LLaVA format); default: the demo model."
    )
    served_model_name: str | None = Field(
        None, description="Model id clients use; defaults to the checkpoint folder name."
    )
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, description="Port.")
    engine: Literal["transformers", "vllm", "openai", "fake"] = Field(
        "transformers", description="The engine that runs the model."
    )
    fake_token_interval: float = Field(
        0.01, ge=0, description="Seconds between tokens of the fake engine (tests, benchmarks)."
    )
    redis_url: str | None = Field(
        None, description="Redis URL of the queue (distributed mode); unset: in process."
    )
    visibility_timeout: float = Field(
        15.0, gt=0, description="A running job whose worker is silent this long is redelivered."
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="Worker heartbeat period (s).")
    max_deliveries: int = Field(3, ge=1, description="Deliveries before a job is dead-lettered.")
    result_ttl: int = Field(
        600, ge=1, description="Seconds every per-request Redis key (results, images) lives."
    )
    event_flush_interval: float = Field(
        0.005,
        ge=0,
        le=0.1,
        description="Worker, Redis queue: under load, result events go to Redis at most this "
        "often (s); each flush is a round trip here and a read in the gateway, so a longer "
        "interval costs less CPU per request and delays an event at most this much "
        "(docs/benchmarks.md). Sparse events go at once.",
    )
    drain_grace: float = Field(
        30.0, ge=0, description="On SIGTERM a worker finishes in-flight jobs for this long."
    )
    metrics_port: int | None = Field(
        None, description="Worker: serve /metrics and /health/* on this port."
    )
    device: str = Field("cpu", description="torch device of the transformers engine (cpu, cuda).")
    lora: list[str] = Field(
        default_factory=list,
        description="A LoRA adapter served beside the base model as its own model id: "
        "NAME=DIR (PEFT adapter directory); repeatable (env: JSON list).",
    )
    upstream_url: str | None = Field(
        None, description="openai engine: base URL of the server to forward to (…/v1)."
    )
    upstream_model: str | None = Field(
        None, description="openai engine: model id upstream; default: the served name."
    )
    upstream_api_key: SecretStr | None = Field(None, description="openai engine: bearer key.")
    max_concurrency: int = Field(
        4, ge=1, description="Requests one engine runs at once (vllm: max_num_seqs)."
    )
    queue_max_depth: int = Field(256, ge=1, description="Queued requests per lane before 429.")
    aging_seconds: float = Field(
        10.0, gt=0, description="Waiting this long lifts a queued job one lane (no starvation)."
    )
    request_timeout: float = Field(
        120.0, gt=0, description="Default deadline (seconds) when X-Request-Timeout is absent."
    )
    max_request_timeout: float = Field(600.0, gt=0, description="Upper bound a client may ask.")
    default_priority: Lane = Field(Lane.routine, description="Lane of a request that names none.")
    max_tokens_default: int = Field(256, ge=1, description="max_tokens when the client sends none.")
    max_tokens_limit: int = Field(4096, ge=1, description="Largest max_tokens accepted.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Request body size limit.")
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds for the whole request body to arrive (else 408)."
    )
    max_json_depth: int = Field(32, ge=4, description="Deepest nesting of the request's JSON.")
    max_messages: int = Field(256, ge=1, description="Messages in one chat request.")
    max_text_chars: int = Field(
        200_000, ge=1, description="Characters of text over all messages of one request."
    )
    auth: Literal["auto", "keys", "off"] = Field(
        "auto",
        description="keys: every /v1 request needs a key from api_keys_file; off: no keys "
        "(local use); auto: keys when api_keys_file is set, off on a loopback bind, else refuse "
        "to start.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="Require API keys from this file (docs/security.md); a Kubernetes "
        "Secret mount works.",
    )
    api_keys_reload_interval: float = Field(
        2.0, ge=0, description="Seconds between checks of the key file for changes."
    )
    max_tenant_labels: int = Field(
        32, ge=0, description="Tenants (in key-file order) that get their own metrics label."
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where the demo model is built and kept: $XDG_CACHE_HOME/gmai-vl, "
        "else ~/.cache/gmai-vl.",
    )
    demo_recipe: str = Field(
        "demo",
        description="Without --model, serve trains the demo model once with this recipe, "
        "a name of `gmai-vl train --preset` (training/demo_recipe.py defines them).",
    )
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    images: ImageLimits = Field(default_factory=ImageLimits)
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    dicom: DicomNodeSettings = Field(default_factory=DicomNodeSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    pacs: list[PacsEntry] = Field(
        default_factory=list, description="DICOMweb PACS entries (JSON list; see docs/pacs.md)."
    )
    pacs_file: Path | None = Field(
        None, description="A JSON file with more PACS entries (keeps credentials out of env)."
    )
    read_ttl: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds a study read and its SR are kept in Redis."
    )
    read_lease: float = Field(
        10.0,
        gt=0,
        description="Redis mode: a running read whose gateway is silent this long is taken "
        "over by another gateway.",
    )
    store_responses: bool = Field(
        True,
        description="Keep /v1/responses answers (store, previous_response_id, background); "
        "off: `store` is treated as false and says so, continuation and background are 400.",
    )
    response_ttl: int = Field(
        30 * 24 * 3600,
        ge=1,
        description="Seconds a stored response (prompts, answer, images) is kept.",
    )
    max_stored_responses: int = Field(
        1000, ge=1, description="Embedded mode: stored responses kept in memory (oldest evicted)."
    )
    response_lease: float = Field(
        10.0,
        gt=0,
        description="Redis mode: a background response whose gateway is silent this long is "
        "taken over by another gateway.",
    )
    model_version: str = Field(
        "unversioned", description="The model's version, written into SRs as the algorithm's."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key that signs read webhooks; unset: webhooks refused."
    )
    webhook_max_attempts: int = Field(4, ge=1, description="Deliveries tried per webhook.")
    webhook_backoff: float = Field(
        0.5, ge=0, description="Seconds before the second webhook try; doubles after each."
    )
    audit_log: str | None = Field(
        None, description="Audit sink: a JSON-lines file path, or '-' for stdout; unset: off."
    )

    @field_validator("lora")
    @classmethod
    def _lora_pairs(cls, value: list[str]) -> list[str]:
        names = []
        for item in value:
            name, sep, directory = item.partition("=")
            if not sep or not name.strip() or not directory.strip():
                raise ValueError("each --lora is NAME=DIR")
            names.append(name.strip())
        if len(set(names)) != len(names):
            raise ValueError("two --lora adapters have the same name")
        return value

    def lora_adapters(self) -> dict[str, Path]:
        """Adapter model id -> its PEFT directory, in the order given."""
        pairs = (item.partition("=") for item in self.lora)
        return {name.strip(): Path(directory.strip()) for name, _, directory in pairs}

    def pacs_entries(self) -> list[PacsEntry]:
        entries = list(self.pacs)
        if self.pacs_file is not None:
            raw = json.loads(Path(self.pacs_file).read_text())
            entries += [PacsEntry.model_validate(item) for item in raw]
        return entries

    def model_id(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if self.model is not None:
            return Path(self.model).name
        return "gmai-vl-demo"
