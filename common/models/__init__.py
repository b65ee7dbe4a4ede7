"""Torch models of RKD-SC: student search space (Table I), Channel-Aware Transformer, timm
teacher, task heads, the T-DeepSC and RTSC baselines (``tdeepsc``, ``rtsc``), the systems of
every method and the edge/server halves exported to ONNX (``system``), one description of an
architecture (``spec.ModelSpec``), the method registry (``registry``), weight files (``weights``)
and complexity counts.

Importing this package imports torch (timm is imported only when a teacher is built).
"""

from .cat import CATBlock, CATConfig, CATDecoder, CATEncoder, SNREmbedding, compact_dim
from .complexity import count_flops, count_params, table_i_complexity
from .heads import ClassifierHead
from .student import (AttentionPool2d, Bottleneck, MixedLayer, SearchableStudent, Student, StudentConfig,
                      derive_student)
from .rtsc import RTSCConfig, RTSCDecoder, RTSCEncoder
from .tdeepsc import CodecSystem, TDeepSCConfig, TDeepSCDecoder, TDeepSCEncoder
from .registry import METHODS, Method, get_method, load_trained, method_names
from .spec import ModelSpec, TeacherConfig, read_model_spec
from .system import EdgePart, JSCCEdgePart, JSCCServerPart, JSCCSystem, ServerPart, TaskSystem, transmit
from .teacher import CheckpointError, Teacher, build_teacher

__all__ = [
    "StudentConfig", "SearchableStudent", "Student", "derive_student", "MixedLayer", "Bottleneck",
    "AttentionPool2d", "CATConfig", "CATEncoder", "CATDecoder", "CATBlock", "SNREmbedding", "compact_dim",
    "ClassifierHead", "Teacher", "build_teacher", "CheckpointError", "EdgePart", "ServerPart",
    "JSCCEdgePart", "JSCCServerPart", "TaskSystem", "JSCCSystem", "transmit", "count_params", "count_flops",
    "table_i_complexity", "ModelSpec", "TeacherConfig", "read_model_spec", "Method", "METHODS", "get_method",
    "method_names", "load_trained", "TDeepSCConfig", "TDeepSCEncoder", "TDeepSCDecoder", "RTSCConfig",
    "RTSCEncoder", "RTSCDecoder", "CodecSystem",
]
