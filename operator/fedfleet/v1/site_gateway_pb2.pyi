from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class EnrollReply(_message.Message):
    __slots__ = ("certificate_pem", "ca_pem")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    ca_pem: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "state")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    hello: SiteHello
    heartbeat: SiteHeartbeat
    state: SiteState
    def __init__(self, hello: _Optional[_Union[SiteHello, _Mapping]] = ..., heartbeat: _Optional[_Union[SiteHeartbeat, _Mapping]] = ..., state: _Optional[_Union[SiteState, _Mapping]] = ...) -> None: ...

class SiteHello(_message.Message):
    __slots__ = ("agent_version", "site")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    site: str
    def __init__(self, agent_version: _Optional[str] = ..., site: _Optional[str] = ...) -> None: ...

class SiteHeartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiteState(_message.Message):
    __slots__ = ("clients", "certificate_requests", "gpus_in_use")
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    GPUS_IN_USE_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[SiteClientState]
    certificate_requests: _containers.RepeatedCompositeFieldContainer[CertificateRequest]
    gpus_in_use: int
    def __init__(self, clients: _Optional[_Iterable[_Union[SiteClientState, _Mapping]]] = ..., certificate_requests: _Optional[_Iterable[_Union[CertificateRequest, _Mapping]]] = ..., gpus_in_use: _Optional[int] = ...) -> None: ...

class SiteClientState(_message.Message):
    __slots__ = ("training_namespace", "training", "client_id", "attempt", "phase", "exit_code", "message", "scheduled", "created", "finished", "given_up", "index", "partition")
    TRAINING_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    GIVEN_UP_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    training_namespace: str
    training: str
    client_id: str
    attempt: int
    phase: str
    exit_code: int
    message: str
    scheduled: str
    created: str
    finished: str
    given_up: bool
    index: int
    partition: int
    def __init__(self, training_namespace: _Optional[str] = ..., training: _Optional[str] = ..., client_id: _Optional[str] = ..., attempt: _Optional[int] = ..., phase: _Optional[str] = ..., exit_code: _Optional[int] = ..., message: _Optional[str] = ..., scheduled: _Optional[str] = ..., created: _Optional[str] = ..., finished: _Optional[str] = ..., given_up: _Optional[bool] = ..., index: _Optional[int] = ..., partition: _Optional[int] = ...) -> None: ...

class CertificateRequest(_message.Message):
    __slots__ = ("training_namespace", "training", "client_id", "csr_pem")
    TRAINING_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    training_namespace: str
    training: str
    client_id: str
    csr_pem: bytes
    def __init__(self, training_namespace: _Optional[str] = ..., training: _Optional[str] = ..., client_id: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("work", "revoked")
    WORK_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    work: SiteWork
    revoked: SiteRevoked
    def __init__(self, work: _Optional[_Union[SiteWork, _Mapping]] = ..., revoked: _Optional[_Union[SiteRevoked, _Mapping]] = ...) -> None: ...

class SiteWork(_message.Message):
    __slots__ = ("trainings", "ended")
    TRAININGS_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    trainings: _containers.RepeatedCompositeFieldContainer[SiteTrainingWork]
    ended: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trainings: _Optional[_Iterable[_Union[SiteTrainingWork, _Mapping]]] = ..., ended: _Optional[_Iterable[str]] = ...) -> None: ...

class SiteTrainingWork(_message.Message):
    __slots__ = ("namespace", "name", "uid", "manifest_json", "aggregator_address", "clients")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    manifest_json: bytes
    aggregator_address: str
    clients: _containers.RepeatedCompositeFieldContainer[SiteClientWork]
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., manifest_json: _Optional[bytes] = ..., aggregator_address: _Optional[str] = ..., clients: _Optional[_Iterable[_Union[SiteClientWork, _Mapping]]] = ...) -> None: ...

class SiteClientWork(_message.Message):
    __slots__ = ("client_id", "index", "partition", "attempt", "given_up", "certificate_pem", "ca_pem")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    GIVEN_UP_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    index: int
    partition: int
    attempt: int
    given_up: bool
    certificate_pem: bytes
    ca_pem: bytes
    def __init__(self, client_id: _Optional[str] = ..., index: _Optional[int] = ..., partition: _Optional[int] = ..., attempt: _Optional[int] = ..., given_up: _Optional[bool] = ..., certificate_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ...) -> None: ...

class SiteRevoked(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
