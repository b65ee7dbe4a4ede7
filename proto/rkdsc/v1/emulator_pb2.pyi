from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("transmitter_id", "task", "frame_id", "symbols", "encoder_snr_db", "sent_unix_ns", "has_label", "label", "file", "codec", "image_index", "images_total")
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    HAS_LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    task: str
    frame_id: int
    symbols: Tensor
    encoder_snr_db: float
    sent_unix_ns: int
    has_label: bool
    label: int
    file: str
    codec: str
    image_index: int
    images_total: int
    def __init__(self, transmitter_id: _Optional[str] = ..., task: _Optional[str] = ..., frame_id: _Optional[int] = ..., symbols: _Optional[_Union[Tensor, _Mapping]] = ..., encoder_snr_db: _Optional[float] = ..., sent_unix_ns: _Optional[int] = ..., has_label: _Optional[bool] = ..., label: _Optional[int] = ..., file: _Optional[str] = ..., codec: _Optional[str] = ..., image_index: _Optional[int] = ..., images_total: _Optional[int] = ...) -> None: ...

class ChannelFrame(_message.Message):
    __slots__ = ("transmitter_id", "task", "frame_id", "received", "h", "noise_var", "snr_db", "fading", "equalized", "encoder_snr_db", "has_label", "label", "file", "edge_sent_unix_ns", "relay_received_unix_ns", "relay_sent_unix_ns", "channel_ms", "airtime_ms", "codec")
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    NOISE_VAR_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    FADING_FIELD_NUMBER: _ClassVar[int]
    EQUALIZED_FIELD_NUMBER: _ClassVar[int]
    ENCODER_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    HAS_LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    EDGE_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RELAY_RECEIVED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RELAY_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MS_FIELD_NUMBER: _ClassVar[int]
    AIRTIME_MS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    task: str
    frame_id: int
    received: Tensor
    h: Tensor
    noise_var: float
    snr_db: float
    fading: str
    equalized: bool
    encoder_snr_db: float
    has_label: bool
    label: int
    file: str
    edge_sent_unix_ns: int
    relay_received_unix_ns: int
    relay_sent_unix_ns: int
    channel_ms: float
    airtime_ms: float
    codec: str
    def __init__(self, transmitter_id: _Optional[str] = ..., task: _Optional[str] = ..., frame_id: _Optional[int] = ..., received: _Optional[_Union[Tensor, _Mapping]] = ..., h: _Optional[_Union[Tensor, _Mapping]] = ..., noise_var: _Optional[float] = ..., snr_db: _Optional[float] = ..., fading: _Optional[str] = ..., equalized: _Optional[bool] = ..., encoder_snr_db: _Optional[float] = ..., has_label: _Optional[bool] = ..., label: _Optional[int] = ..., file: _Optional[str] = ..., edge_sent_unix_ns: _Optional[int] = ..., relay_received_unix_ns: _Optional[int] = ..., relay_sent_unix_ns: _Optional[int] = ..., channel_ms: _Optional[float] = ..., airtime_ms: _Optional[float] = ..., codec: _Optional[str] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class LinkState(_message.Message):
    __slots__ = ("transmitter_id", "snr_db", "path_gain_db", "effective_snr_db", "fading", "seed", "frames", "instantaneous_snr_db", "rician_k")
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    PATH_GAIN_DB_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    FADING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    INSTANTANEOUS_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    RICIAN_K_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    snr_db: float
    path_gain_db: float
    effective_snr_db: float
    fading: str
    seed: int
    frames: int
    instantaneous_snr_db: float
    rician_k: float
    def __init__(self, transmitter_id: _Optional[str] = ..., snr_db: _Optional[float] = ..., path_gain_db: _Optional[float] = ..., effective_snr_db: _Optional[float] = ..., fading: _Optional[str] = ..., seed: _Optional[int] = ..., frames: _Optional[int] = ..., instantaneous_snr_db: _Optional[float] = ..., rician_k: _Optional[float] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "name", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    score: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("frame_id", "transmitter_id", "task", "top_k", "predicted_class", "predicted_name", "score", "error", "link", "decoder_snr_db", "queue_ms", "compute_ms", "batch_size", "relay_roundtrip_ms", "channel_ms", "edge_sent_unix_ns", "server_done_unix_ns", "relay_returned_unix_ns", "has_label", "label", "file", "codec", "symbols_per_image", "emulated")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    DECODER_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RELAY_ROUNDTRIP_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MS_FIELD_NUMBER: _ClassVar[int]
    EDGE_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_DONE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RELAY_RETURNED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    HAS_LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    transmitter_id: str
    task: str
    top_k: _containers.RepeatedCompositeFieldContainer[ClassScore]
    predicted_class: int
    predicted_name: str
    score: float
    error: FrameError
    link: LinkState
    decoder_snr_db: float
    queue_ms: float
    compute_ms: float
    batch_size: int
    relay_roundtrip_ms: float
    channel_ms: float
    edge_sent_unix_ns: int
    server_done_unix_ns: int
    relay_returned_unix_ns: int
    has_label: bool
    label: int
    file: str
    codec: str
    symbols_per_image: int
    emulated: EmulatedLatency
    def __init__(self, frame_id: _Optional[int] = ..., transmitter_id: _Optional[str] = ..., task: _Optional[str] = ..., top_k: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., predicted_class: _Optional[int] = ..., predicted_name: _Optional[str] = ..., score: _Optional[float] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., link: _Optional[_Union[LinkState, _Mapping]] = ..., decoder_snr_db: _Optional[float] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., relay_roundtrip_ms: _Optional[float] = ..., channel_ms: _Optional[float] = ..., edge_sent_unix_ns: _Optional[int] = ..., server_done_unix_ns: _Optional[int] = ..., relay_returned_unix_ns: _Optional[int] = ..., has_label: _Optional[bool] = ..., label: _Optional[int] = ..., file: _Optional[str] = ..., codec: _Optional[str] = ..., symbols_per_image: _Optional[int] = ..., emulated: _Optional[_Union[EmulatedLatency, _Mapping]] = ...) -> None: ...

class EmulatedLatency(_message.Message):
    __slots__ = ("encode_ms", "uplink_queue_ms", "airtime_ms", "propagation_ms", "server_ms", "downlink_ms", "total_ms", "device_queue_ms", "captured_s", "distance_m", "channel_snr_db")
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    UPLINK_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    AIRTIME_MS_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_S_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    encode_ms: float
    uplink_queue_ms: float
    airtime_ms: float
    propagation_ms: float
    server_ms: float
    downlink_ms: float
    total_ms: float
    device_queue_ms: float
    captured_s: float
    distance_m: float
    channel_snr_db: float
    def __init__(self, encode_ms: _Optional[float] = ..., uplink_queue_ms: _Optional[float] = ..., airtime_ms: _Optional[float] = ..., propagation_ms: _Optional[float] = ..., server_ms: _Optional[float] = ..., downlink_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., device_queue_ms: _Optional[float] = ..., captured_s: _Optional[float] = ..., distance_m: _Optional[float] = ..., channel_snr_db: _Optional[float] = ...) -> None: ...

class FrameMeta(_message.Message):
    __slots__ = ("frame_id", "has_label", "label", "file", "image_index")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    has_label: bool
    label: int
    file: str
    image_index: int
    def __init__(self, frame_id: _Optional[int] = ..., has_label: _Optional[bool] = ..., label: _Optional[int] = ..., file: _Optional[str] = ..., image_index: _Optional[int] = ...) -> None: ...

class FrameBatch(_message.Message):
    __slots__ = ("transmitter_id", "task", "symbols", "frames", "encoder_snr_db", "sent_unix_ns", "codec", "images_total")
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENCODER_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    IMAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    task: str
    symbols: Tensor
    frames: _containers.RepeatedCompositeFieldContainer[FrameMeta]
    encoder_snr_db: float
    sent_unix_ns: int
    codec: str
    images_total: int
    def __init__(self, transmitter_id: _Optional[str] = ..., task: _Optional[str] = ..., symbols: _Optional[_Union[Tensor, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[FrameMeta, _Mapping]]] = ..., encoder_snr_db: _Optional[float] = ..., sent_unix_ns: _Optional[int] = ..., codec: _Optional[str] = ..., images_total: _Optional[int] = ...) -> None: ...

class ChannelFrameBatch(_message.Message):
    __slots__ = ("transmitter_id", "task", "received", "h", "noise_var", "snr_db", "fading", "equalized", "encoder_snr_db", "frames", "edge_sent_unix_ns", "relay_received_unix_ns", "relay_sent_unix_ns", "channel_ms", "airtime_ms", "codec", "row_snr_db")
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    NOISE_VAR_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    FADING_FIELD_NUMBER: _ClassVar[int]
    EQUALIZED_FIELD_NUMBER: _ClassVar[int]
    ENCODER_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    EDGE_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RELAY_RECEIVED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RELAY_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MS_FIELD_NUMBER: _ClassVar[int]
    AIRTIME_MS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    ROW_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    task: str
    received: Tensor
    h: Tensor
    noise_var: float
    snr_db: float
    fading: str
    equalized: bool
    encoder_snr_db: float
    frames: _containers.RepeatedCompositeFieldContainer[FrameMeta]
    edge_sent_unix_ns: int
    relay_received_unix_ns: int
    relay_sent_unix_ns: int
    channel_ms: float
    airtime_ms: float
    codec: str
    row_snr_db: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, transmitter_id: _Optional[str] = ..., task: _Optional[str] = ..., received: _Optional[_Union[Tensor, _Mapping]] = ..., h: _Optional[_Union[Tensor, _Mapping]] = ..., noise_var: _Optional[float] = ..., snr_db: _Optional[float] = ..., fading: _Optional[str] = ..., equalized: _Optional[bool] = ..., encoder_snr_db: _Optional[float] = ..., frames: _Optional[_Iterable[_Union[FrameMeta, _Mapping]]] = ..., edge_sent_unix_ns: _Optional[int] = ..., relay_received_unix_ns: _Optional[int] = ..., relay_sent_unix_ns: _Optional[int] = ..., channel_ms: _Optional[float] = ..., airtime_ms: _Optional[float] = ..., codec: _Optional[str] = ..., row_snr_db: _Optional[_Iterable[float]] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class LinkRequest(_message.Message):
    __slots__ = ("transmitter_id",)
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    def __init__(self, transmitter_id: _Optional[str] = ...) -> None: ...

class SetLinkRequest(_message.Message):
    __slots__ = ("transmitter_id", "snr_db", "fading", "path_gain_db", "seed", "rician_k")
    TRANSMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    FADING_FIELD_NUMBER: _ClassVar[int]
    PATH_GAIN_DB_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RICIAN_K_FIELD_NUMBER: _ClassVar[int]
    transmitter_id: str
    snr_db: float
    fading: str
    path_gain_db: float
    seed: int
    rician_k: float
    def __init__(self, transmitter_id: _Optional[str] = ..., snr_db: _Optional[float] = ..., fading: _Optional[str] = ..., path_gain_db: _Optional[float] = ..., seed: _Optional[int] = ..., rician_k: _Optional[float] = ...) -> None: ...

class ListLinksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLinksResponse(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[LinkState]
    def __init__(self, links: _Optional[_Iterable[_Union[LinkState, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("name", "num_classes", "class_names", "compact_dim", "symbols_per_image", "codecs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    COMPACT_DIM_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    compact_dim: int
    symbols_per_image: int
    codecs: _containers.RepeatedCompositeFieldContainer[CodecInfo]
    def __init__(self, name: _Optional[str] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., compact_dim: _Optional[int] = ..., symbols_per_image: _Optional[int] = ..., codecs: _Optional[_Iterable[_Union[CodecInfo, _Mapping]]] = ...) -> None: ...

class CodecInfo(_message.Message):
    __slots__ = ("name", "compression_ratio", "compact_dim", "symbols_per_image")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    COMPACT_DIM_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    compression_ratio: float
    compact_dim: int
    symbols_per_image: int
    def __init__(self, name: _Optional[str] = ..., compression_ratio: _Optional[float] = ..., compact_dim: _Optional[int] = ..., symbols_per_image: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("tasks", "bundle", "bundle_sha256", "top_k", "max_batch")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    bundle: str
    bundle_sha256: str
    top_k: int
    max_batch: int
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ..., bundle: _Optional[str] = ..., bundle_sha256: _Optional[str] = ..., top_k: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...
