"""Torch models of RKD-SC: student search space (Table I), Channel-Aware Transformer, timm
teacher, task heads, the edge/server halves that are exported to ONNX, and complexity counts.

Importing this package imports torch (timm is imported only when a teacher is built).
"""

from .cat import CATBlock, CATConfig, CATDecoder, CATEncoder, SNREmbedding, compact_dim
from .complexity import count_flops, count_params, table_i_complexity
from .heads import ClassifierHead
from .student import (AttentionPool2d, Bottleneck, MixedLayer, SearchableStudent, Student, StudentConfig,
                      derive_student)
from .system import EdgePart, JSCCEdgePart, JSCCServerPart, ServerPart
from .teacher import CheckpointError, Teacher, build_teacher

__all__ = [
    "StudentConfig", "SearchableStudent", "Student", "derive_student", "MixedLayer", "Bottleneck",
    "AttentionPool2d", "CATConfig", "CATEncoder", "CATDecoder", "CATBlock", "SNREmbedding", "compact_dim",
    "ClassifierHead", "Teacher", "build_teacher", "CheckpointError", "EdgePart", "ServerPart",
    "JSCCEdgePart", "JSCCServerPart", "count_params", "count_flops", "table_i_complexity",
]
