"""WebAssembly step sandbox: wasmtime runner, host functions and module cache.

A step is a WASI preview-1 command module: input JSON on stdin, one JSON value on
stdout, exit code 0 for success. No args, env, files or sockets; clocks are fixed and
randomness is seeded, so the same module, input and seed give the same output bytes on
every node. Host functions (module "qflow": log, http_fetch, state_get, state_set,
block_get, block_put, result) exist only when the step's capability token grants them,
and every call is authorized with its actual arguments. The ABI, limits, failure kinds
and host functions are specified for step authors in docs/steps.md.

    with Sandbox(blocks, policy=SubnetPolicy(allowed_modules=...), cache_dir=...) as sb:
        result = sb.run(module_cid, b'{"x": 1}', limits=Limits(fuel=10**8), authorizer=token)
        result.output / result.failure / result.usage / result.state_delta
"""

from qflow_node.core.capability.vocabulary import (
    BLOCK_GET,
    BLOCK_PUT,
    HTTP_FETCH,
    LOG,
    STATE_GET,
    STATE_SET,
)
from qflow_node.sandbox.authz import (
    OPERATIONS,
    AuthArgs,
    AuthDecision,
    Authorizer,
    Decision,
)
from qflow_node.sandbox.cache import ModuleCache, default_cache_dir
from qflow_node.sandbox.failures import FailureKind, StepFailure
from qflow_node.sandbox.limits import Limits, parse_duration, parse_size
from qflow_node.sandbox.policy import DEFAULT_MAXIMA, SubnetPolicy
from qflow_node.sandbox.result import Denial, LogEntry, StepResult, Usage
from qflow_node.sandbox.runner import Sandbox
from qflow_node.sandbox.state import StepState, client_id_for
from qflow_node.sandbox.wasi import ZERO_SEED, derive_seed

__all__ = [
    "BLOCK_GET",
    "BLOCK_PUT",
    "DEFAULT_MAXIMA",
    "HTTP_FETCH",
    "LOG",
    "OPERATIONS",
    "STATE_GET",
    "STATE_SET",
    "ZERO_SEED",
    "AuthArgs",
    "AuthDecision",
    "Authorizer",
    "Decision",
    "Denial",
    "FailureKind",
    "Limits",
    "LogEntry",
    "ModuleCache",
    "Sandbox",
    "StepFailure",
    "StepResult",
    "StepState",
    "SubnetPolicy",
    "Usage",
    "client_id_for",
    "default_cache_dir",
    "derive_seed",
    "parse_duration",
    "parse_size",
]
