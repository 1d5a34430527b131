from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoundKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_KIND_UNSPECIFIED: _ClassVar[RoundKind]
    ROUND_KIND_TRAIN: _ClassVar[RoundKind]
    ROUND_KIND_EVALUATE: _ClassVar[RoundKind]

class RoundPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_PHASE_UNSPECIFIED: _ClassVar[RoundPhase]
    ROUND_PHASE_PENDING: _ClassVar[RoundPhase]
    ROUND_PHASE_TRAINING: _ClassVar[RoundPhase]
    ROUND_PHASE_AGGREGATING: _ClassVar[RoundPhase]
    ROUND_PHASE_SUCCEEDED: _ClassVar[RoundPhase]
    ROUND_PHASE_FAILED: _ClassVar[RoundPhase]
ROUND_KIND_UNSPECIFIED: RoundKind
ROUND_KIND_TRAIN: RoundKind
ROUND_KIND_EVALUATE: RoundKind
ROUND_PHASE_UNSPECIFIED: RoundPhase
ROUND_PHASE_PENDING: RoundPhase
ROUND_PHASE_TRAINING: RoundPhase
ROUND_PHASE_AGGREGATING: RoundPhase
ROUND_PHASE_SUCCEEDED: RoundPhase
ROUND_PHASE_FAILED: RoundPhase

class TensorChunk(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "data", "crc32", "block_values", "scales", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    BLOCK_VALUES_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: bytes
    crc32: int
    block_values: int
    scales: bytes
    values: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ..., block_values: _Optional[int] = ..., scales: _Optional[bytes] = ..., values: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("training", "client_id", "site", "session", "wait_seconds")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    training: str
    client_id: str
    site: str
    session: str
    wait_seconds: int
    def __init__(self, training: _Optional[str] = ..., client_id: _Optional[str] = ..., site: _Optional[str] = ..., session: _Optional[str] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("action", "round", "model_version", "model_digest", "deadline_unix", "config")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[JoinReply.Action]
        ACTION_WAIT: _ClassVar[JoinReply.Action]
        ACTION_TRAIN: _ClassVar[JoinReply.Action]
        ACTION_EVALUATE: _ClassVar[JoinReply.Action]
        ACTION_FINISHED: _ClassVar[JoinReply.Action]
    ACTION_UNSPECIFIED: JoinReply.Action
    ACTION_WAIT: JoinReply.Action
    ACTION_TRAIN: JoinReply.Action
    ACTION_EVALUATE: JoinReply.Action
    ACTION_FINISHED: JoinReply.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    action: JoinReply.Action
    round: int
    model_version: int
    model_digest: str
    deadline_unix: float
    config: RoundConfig
    def __init__(self, action: _Optional[_Union[JoinReply.Action, str]] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., model_digest: _Optional[str] = ..., deadline_unix: _Optional[float] = ..., config: _Optional[_Union[RoundConfig, _Mapping]] = ...) -> None: ...

class StrategyTerms(_message.Message):
    __slots__ = ("proximal_mu",)
    PROXIMAL_MU_FIELD_NUMBER: _ClassVar[int]
    proximal_mu: float
    def __init__(self, proximal_mu: _Optional[float] = ...) -> None: ...

class SecAggParameters(_message.Message):
    __slots__ = ("participants", "neighbours", "threshold", "clip", "max_weight", "lane_bits", "attempt")
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LANE_BITS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    participants: int
    neighbours: int
    threshold: int
    clip: float
    max_weight: float
    lane_bits: int
    attempt: int
    def __init__(self, participants: _Optional[int] = ..., neighbours: _Optional[int] = ..., threshold: _Optional[int] = ..., clip: _Optional[float] = ..., max_weight: _Optional[float] = ..., lane_bits: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class RoundConfig(_message.Message):
    __slots__ = ("seed", "strategy", "secure_aggregation")
    SEED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    seed: int
    strategy: StrategyTerms
    secure_aggregation: SecAggParameters
    def __init__(self, seed: _Optional[int] = ..., strategy: _Optional[_Union[StrategyTerms, _Mapping]] = ..., secure_aggregation: _Optional[_Union[SecAggParameters, _Mapping]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("training", "client_id", "round")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    training: str
    client_id: str
    round: int
    def __init__(self, training: _Optional[str] = ..., client_id: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("training", "client_id", "round", "num_examples", "base_version", "session")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    training: str
    client_id: str
    round: int
    num_examples: int
    base_version: int
    session: str
    def __init__(self, training: _Optional[str] = ..., client_id: _Optional[str] = ..., round: _Optional[int] = ..., num_examples: _Optional[int] = ..., base_version: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class UpdateMessage(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    chunk: TensorChunk
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("bytes_received", "clients_reported")
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_REPORTED_FIELD_NUMBER: _ClassVar[int]
    bytes_received: int
    clients_reported: int
    def __init__(self, bytes_received: _Optional[int] = ..., clients_reported: _Optional[int] = ...) -> None: ...

class MetricsReport(_message.Message):
    __slots__ = ("training", "client_id", "round", "phase", "model_version", "num_examples", "metrics")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[MetricsReport.Phase]
        PHASE_TRAIN: _ClassVar[MetricsReport.Phase]
        PHASE_EVALUATE: _ClassVar[MetricsReport.Phase]
    PHASE_UNSPECIFIED: MetricsReport.Phase
    PHASE_TRAIN: MetricsReport.Phase
    PHASE_EVALUATE: MetricsReport.Phase
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    training: str
    client_id: str
    round: int
    phase: MetricsReport.Phase
    model_version: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, training: _Optional[str] = ..., client_id: _Optional[str] = ..., round: _Optional[int] = ..., phase: _Optional[_Union[MetricsReport.Phase, str]] = ..., model_version: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class MetricsAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("training", "client_id", "round", "session", "stage", "payload")
    class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STAGE_UNSPECIFIED: _ClassVar[SecAggRequest.Stage]
        STAGE_ADVERTISE_KEYS: _ClassVar[SecAggRequest.Stage]
        STAGE_SHARE_KEYS: _ClassVar[SecAggRequest.Stage]
        STAGE_UNMASK: _ClassVar[SecAggRequest.Stage]
        STAGE_CONSISTENCY: _ClassVar[SecAggRequest.Stage]
    STAGE_UNSPECIFIED: SecAggRequest.Stage
    STAGE_ADVERTISE_KEYS: SecAggRequest.Stage
    STAGE_SHARE_KEYS: SecAggRequest.Stage
    STAGE_UNMASK: SecAggRequest.Stage
    STAGE_CONSISTENCY: SecAggRequest.Stage
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    training: str
    client_id: str
    round: int
    session: str
    stage: SecAggRequest.Stage
    payload: bytes
    def __init__(self, training: _Optional[str] = ..., client_id: _Optional[str] = ..., round: _Optional[int] = ..., session: _Optional[str] = ..., stage: _Optional[_Union[SecAggRequest.Stage, str]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("payload", "done")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    done: bool
    def __init__(self, payload: _Optional[bytes] = ..., done: _Optional[bool] = ...) -> None: ...

class StartRoundRequest(_message.Message):
    __slots__ = ("round", "kind", "participants", "timeout_seconds", "min_clients", "accounting")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    round: int
    kind: RoundKind
    participants: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    min_clients: int
    accounting: PrivacyAccounting
    def __init__(self, round: _Optional[int] = ..., kind: _Optional[_Union[RoundKind, str]] = ..., participants: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ..., min_clients: _Optional[int] = ..., accounting: _Optional[_Union[PrivacyAccounting, _Mapping]] = ...) -> None: ...

class PrivacyAccounting(_message.Message):
    __slots__ = ("population",)
    POPULATION_FIELD_NUMBER: _ClassVar[int]
    population: int
    def __init__(self, population: _Optional[int] = ...) -> None: ...

class ClientState(_message.Message):
    __slots__ = ("client_id", "state", "reason")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    state: str
    reason: str
    def __init__(self, client_id: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RoundPrivacy(_message.Message):
    __slots__ = ("mode", "clip_norm", "noise_multiplier", "effective_noise_multiplier", "expected_clients", "survivors", "max_update_norm")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    MAX_UPDATE_NORM_FIELD_NUMBER: _ClassVar[int]
    mode: str
    clip_norm: float
    noise_multiplier: float
    effective_noise_multiplier: float
    expected_clients: int
    survivors: int
    max_update_norm: float
    def __init__(self, mode: _Optional[str] = ..., clip_norm: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., effective_noise_multiplier: _Optional[float] = ..., expected_clients: _Optional[int] = ..., survivors: _Optional[int] = ..., max_update_norm: _Optional[float] = ...) -> None: ...

class RoundState(_message.Message):
    __slots__ = ("round", "kind", "phase", "participants", "reported", "dropped", "reason", "metrics", "model_digest", "started_unix", "finished_unix", "model_version", "clients", "min_clients", "deadline_unix", "privacy", "bytes_received", "aborted")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    round: int
    kind: RoundKind
    phase: RoundPhase
    participants: _containers.RepeatedScalarFieldContainer[str]
    reported: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    metrics: _containers.ScalarMap[str, float]
    model_digest: str
    started_unix: float
    finished_unix: float
    model_version: int
    clients: _containers.RepeatedCompositeFieldContainer[ClientState]
    min_clients: int
    deadline_unix: float
    privacy: RoundPrivacy
    bytes_received: int
    aborted: bool
    def __init__(self, round: _Optional[int] = ..., kind: _Optional[_Union[RoundKind, str]] = ..., phase: _Optional[_Union[RoundPhase, str]] = ..., participants: _Optional[_Iterable[str]] = ..., reported: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., model_digest: _Optional[str] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., model_version: _Optional[int] = ..., clients: _Optional[_Iterable[_Union[ClientState, _Mapping]]] = ..., min_clients: _Optional[int] = ..., deadline_unix: _Optional[float] = ..., privacy: _Optional[_Union[RoundPrivacy, _Mapping]] = ..., bytes_received: _Optional[int] = ..., aborted: _Optional[bool] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round", "kind", "phase", "reason", "metrics", "model_digest", "model_version", "started_unix", "finished_unix", "deadline_unix", "participants", "reported", "dropped", "min_clients", "privacy", "bytes_received")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    round: int
    kind: RoundKind
    phase: RoundPhase
    reason: str
    metrics: _containers.ScalarMap[str, float]
    model_digest: str
    model_version: int
    started_unix: float
    finished_unix: float
    deadline_unix: float
    participants: int
    reported: int
    dropped: int
    min_clients: int
    privacy: RoundPrivacy
    bytes_received: int
    def __init__(self, round: _Optional[int] = ..., kind: _Optional[_Union[RoundKind, str]] = ..., phase: _Optional[_Union[RoundPhase, str]] = ..., reason: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., model_digest: _Optional[str] = ..., model_version: _Optional[int] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., deadline_unix: _Optional[float] = ..., participants: _Optional[int] = ..., reported: _Optional[int] = ..., dropped: _Optional[int] = ..., min_clients: _Optional[int] = ..., privacy: _Optional[_Union[RoundPrivacy, _Mapping]] = ..., bytes_received: _Optional[int] = ...) -> None: ...

class ReleasedPrivacy(_message.Message):
    __slots__ = ("privacy", "rounds")
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    privacy: RoundPrivacy
    rounds: int
    def __init__(self, privacy: _Optional[_Union[RoundPrivacy, _Mapping]] = ..., rounds: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AggregatorStatus(_message.Message):
    __slots__ = ("training", "model_version", "model_digest", "ready_clients", "finished", "lineage_head", "lineage_public_key", "lineage_key_fingerprint", "current", "recent", "ready_count", "released", "sites")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    READY_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_HEAD_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    READY_COUNT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    training: str
    model_version: int
    model_digest: str
    ready_clients: _containers.RepeatedScalarFieldContainer[str]
    finished: bool
    lineage_head: str
    lineage_public_key: str
    lineage_key_fingerprint: str
    current: RoundSummary
    recent: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    ready_count: int
    released: _containers.RepeatedCompositeFieldContainer[ReleasedPrivacy]
    sites: _containers.RepeatedCompositeFieldContainer[SiteAccount]
    def __init__(self, training: _Optional[str] = ..., model_version: _Optional[int] = ..., model_digest: _Optional[str] = ..., ready_clients: _Optional[_Iterable[str]] = ..., finished: _Optional[bool] = ..., lineage_head: _Optional[str] = ..., lineage_public_key: _Optional[str] = ..., lineage_key_fingerprint: _Optional[str] = ..., current: _Optional[_Union[RoundSummary, _Mapping]] = ..., recent: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., ready_count: _Optional[int] = ..., released: _Optional[_Iterable[_Union[ReleasedPrivacy, _Mapping]]] = ..., sites: _Optional[_Iterable[_Union[SiteAccount, _Mapping]]] = ...) -> None: ...

class SiteAccount(_message.Message):
    __slots__ = ("site", "updates_accepted", "updates_refused", "bytes_received", "bytes_sent", "client_seconds")
    SITE_FIELD_NUMBER: _ClassVar[int]
    UPDATES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    site: str
    updates_accepted: int
    updates_refused: int
    bytes_received: int
    bytes_sent: int
    client_seconds: float
    def __init__(self, site: _Optional[str] = ..., updates_accepted: _Optional[int] = ..., updates_refused: _Optional[int] = ..., bytes_received: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., client_seconds: _Optional[float] = ...) -> None: ...

class RoundRequest(_message.Message):
    __slots__ = ("round", "kind")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    round: int
    kind: RoundKind
    def __init__(self, round: _Optional[int] = ..., kind: _Optional[_Union[RoundKind, str]] = ...) -> None: ...

class ListRoundsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRoundsReply(_message.Message):
    __slots__ = ("rounds", "next_page_token", "total")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundState]
    next_page_token: str
    total: int
    def __init__(self, rounds: _Optional[_Iterable[_Union[RoundState, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class ListReadyRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReadyReply(_message.Message):
    __slots__ = ("client_ids", "next_page_token", "total")
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    total: int
    def __init__(self, client_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class DropRequest(_message.Message):
    __slots__ = ("round", "client_id", "reason")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    round: int
    client_id: str
    reason: str
    def __init__(self, round: _Optional[int] = ..., client_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("round", "reason")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    round: int
    reason: str
    def __init__(self, round: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeSitesRequest(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[RevokedSite]
    def __init__(self, sites: _Optional[_Iterable[_Union[RevokedSite, _Mapping]]] = ...) -> None: ...

class RevokedSite(_message.Message):
    __slots__ = ("site", "reason")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    site: str
    reason: str
    def __init__(self, site: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeSitesReply(_message.Message):
    __slots__ = ("sites", "dropped_clients")
    SITES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedScalarFieldContainer[str]
    dropped_clients: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sites: _Optional[_Iterable[str]] = ..., dropped_clients: _Optional[_Iterable[str]] = ...) -> None: ...
