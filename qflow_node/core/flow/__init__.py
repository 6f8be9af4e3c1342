"""The flow language: parse a flow (YAML or JSON), validate it, compile it to its IR and
name it by CID. Pure: the source text comes in, resolvers for local modules and
sub-flows are passed in; nothing here reads files. docs/flows.md is the reference.
"""

from qflow_node.core.flow.compiler import (
    CompiledFlow,
    ModuleResolver,
    compile_document,
    compile_flow,
)
from qflow_node.core.flow.decompile import check_ir, decompile
from qflow_node.core.flow.errors import (
    MAX_ERRORS,
    FlowCompileError,
    FlowError,
    ResolveError,
    format_path,
)
from qflow_node.core.flow.expr import ROOT_NAMES, STEP_FIELDS, step_references
from qflow_node.core.flow.ir import (
    FORMAT,
    ApprovalStep,
    CapabilityIR,
    FlowIR,
    FlowStep,
    ForeachStep,
    HttpStep,
    IfStep,
    ParallelStep,
    RetryIR,
    RunStep,
    SleepStep,
    StepIR,
    Template,
    TransformStep,
    ValidateStep,
    WaitForStep,
    child_lists,
    instance_id,
    step_index,
    subflow_links,
    walk,
)
from qflow_node.core.flow.retry import jitter_ms, retry_delay_ms
from qflow_node.core.flow.schema import FLOW_SCHEMA, KINDS, SCHEMA_ID
from qflow_node.core.flow.source import (
    MAX_NESTING,
    MAX_SOURCE_BYTES,
    Document,
    Syntax,
    parse_source,
)
from qflow_node.core.flow.subflows import MAX_SUBFLOW_DEPTH, FlowResolver

__all__ = [
    "FLOW_SCHEMA",
    "FORMAT",
    "KINDS",
    "MAX_ERRORS",
    "MAX_NESTING",
    "MAX_SOURCE_BYTES",
    "MAX_SUBFLOW_DEPTH",
    "ROOT_NAMES",
    "SCHEMA_ID",
    "STEP_FIELDS",
    "ApprovalStep",
    "CapabilityIR",
    "CompiledFlow",
    "Document",
    "FlowCompileError",
    "FlowError",
    "FlowIR",
    "FlowResolver",
    "FlowStep",
    "ForeachStep",
    "HttpStep",
    "IfStep",
    "ModuleResolver",
    "ParallelStep",
    "ResolveError",
    "RetryIR",
    "RunStep",
    "SleepStep",
    "StepIR",
    "Syntax",
    "Template",
    "TransformStep",
    "ValidateStep",
    "WaitForStep",
    "check_ir",
    "child_lists",
    "compile_document",
    "compile_flow",
    "decompile",
    "format_path",
    "instance_id",
    "jitter_ms",
    "parse_source",
    "retry_delay_ms",
    "step_index",
    "step_references",
    "subflow_links",
    "walk",
]
