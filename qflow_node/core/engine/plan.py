"""What can happen next in an execution, whatever the time: the walk over the flow.

`plan(state)` walks the step tree from each list's cursor and returns every action the
state allows (retries and timers with their due time). It depends on the state only,
so it is cached on the state; `next_actions` filters it by `now`, and `apply` checks
each event against it (an event no planned action allows is illegal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jsonschema

from qflow_node.core.engine.actions import (
    Action,
    AwaitApproval,
    AwaitEvent,
    CompleteExecution,
    CompleteStep,
    FailExecution,
    FailStep,
    FireTimer,
    RunStep,
    StartStep,
    StepAction,
    Wake,
)
from qflow_node.core.engine.events import error
from qflow_node.core.engine.expressions import (
    EvalError,
    fill,
    template_references,
    template_uses_vars,
)
from qflow_node.core.engine.index import COMPENSATE, parse_instance
from qflow_node.core.engine.state import (
    COMPLETED,
    FAILED,
    NEW,
    RETRY,
    TERMINAL,
    ExecState,
    Instance,
)
from qflow_node.core.flow import StepIR, Template, instance_id, retry_delay_ms

EXECUTED: Final = frozenset({"run", "http", "flow"})  # by the driver, may be retried
TIMED: Final = frozenset({"sleep", "wait_for", "approval"})
CONTROL: Final = frozenset({"if", "parallel", "foreach"})


def is_decision(step: StepIR) -> bool:
    """Settled by a decision that two sides of a partition could take differently: an
    outside input (an approval or a denial, an event) or a deadline racing the step's own
    end (a control step's timeout). A sleep's timer has one outcome; a run step's result
    is the step's own (critical steps have their own rule)."""
    kind = step["kind"]
    return kind in ("wait_for", "approval") or (kind in CONTROL and step["timeout_ms"] is not None)


# A list's or step's progress: (DONE, output) | (RUNNING, None) | (FAILED, error).
DONE: Final = "done"
BUSY: Final = "running"
FAIL: Final = "failed"
Outcome = tuple[str, Any]
Loops = tuple[tuple[str, int], ...]


@dataclass(slots=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    finish: CompleteExecution | FailExecution | None = None
    _by_instance: dict[str, list[StepAction]] | None = None

    def add(self, action: StepAction) -> None:
        self.actions.append(action)

    @property
    def by_instance(self) -> dict[str, list[StepAction]]:
        """The step actions of each instance (built on first use)."""
        if self._by_instance is None:
            found: dict[str, list[StepAction]] = {}
            for action in self.actions:
                if not isinstance(action, CompleteExecution | FailExecution | Wake):
                    found.setdefault(action.instance, []).append(action)
            self._by_instance = found
        return self._by_instance


def plan(state: ExecState) -> Plan:
    cached = state._plan
    if cached is None:
        cached = state._plan = _Walk(state).run()
    assert isinstance(cached, Plan)
    return cached


def step_uses_vars(step: StepIR) -> bool:
    """Whether any expression of the step itself (not its nested steps) reads `vars`."""
    sources: list[Template] = []
    if step["kind"] in ("run", "flow"):
        sources.append(step["with"])
    elif step["kind"] == "transform":
        sources.append(step["value"])
    elif step["kind"] == "validate":
        sources.append(step["data"])
    elif step["kind"] == "http":
        sources += [step["url"], dict(step["headers"]), step["body"] or "null"]
    elif step["kind"] == "wait_for":
        sources.append(step["match"])
    elif step["kind"] == "if":
        sources.append(step["condition"])
    elif step["kind"] == "foreach":
        sources.append(step["items"])
    return any(template_uses_vars(source) for source in sources)


def is_done(step: StepIR, inst: Instance | None) -> bool:
    """Finished so that the next step may run: completed, or failed with on_error continue."""
    if inst is None:
        return False
    return inst.status == COMPLETED or (inst.status == FAILED and step["on_error"] == "continue")


class _Walk:
    def __init__(self, state: ExecState) -> None:
        self.state = state
        self.index = state.index
        self.instances = state.instances
        self.plan = Plan()

    def run(self) -> Plan:
        state = self.state
        if state.status == NEW or state.status in TERMINAL:
            return self.plan
        if state.saga is not None:
            self._unwind(state.saga)
            return self.plan
        status, value = self._list(state.flow["steps"], (), {})
        if status == DONE:
            try:
                output = fill(state.flow["output"], self._names(state.flow["output"], (), {}))
            except EvalError as exc:
                self.plan.finish = FailExecution(error("expression", f"output: {exc}"))
            else:
                self.plan.finish = CompleteExecution(output)
        elif status == FAIL:
            self.plan.finish = FailExecution(value)
        if self.plan.finish is not None:
            self.plan.actions.append(self.plan.finish)
        return self.plan

    # -- names visible to expressions ------------------------------------------------------

    def _names(self, template: Template, loops: Loops, extra: Mapping[str, Any]) -> dict[str, Any]:
        return self._names_for(template_references(template), loops, extra)

    def _fill(
        self, key: str, templates: tuple[Template, ...], loops: Loops, extra: Mapping[str, Any]
    ) -> Any:
        """The values of `templates` (a tuple), memoised on the objects they read."""
        refs = tuple(dict.fromkeys(r for t in templates for r in template_references(t)))
        current = dict(loops)
        deps: list[object] = [self.state.inputs, *extra.values()]
        if any(template_uses_vars(t) for t in templates):
            deps.append(self.state.vars())
        for ref in refs:
            enclosing = self.index.loops.get(ref, ())
            ref_loops = [(loop, current.get(loop, 0)) for loop in enclosing]
            deps.append(self.instances.get(instance_id(ref, ref_loops)))
        hit = self.index.memo.get(key)
        if (
            hit is not None
            and len(hit[0]) == len(deps)
            and all(a is b for a, b in zip(hit[0], deps, strict=True))
        ):
            if isinstance(hit[1], EvalError):
                raise hit[1]
            return hit[1]
        names = self._names_for(refs, loops, extra)
        value: Any
        try:
            value = tuple(fill(t, names) for t in templates)
        except EvalError as exc:
            self.index.memo[key] = (tuple(deps), exc)
            raise
        self.index.memo[key] = (tuple(deps), value)
        return value

    def _names_for(
        self, refs: tuple[str, ...], loops: Loops, extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        current = dict(loops)
        visible: dict[str, Any] = {}
        for ref in refs:
            enclosing = self.index.loops.get(ref, ())
            ref_loops = [(loop, current.get(loop, 0)) for loop in enclosing]
            inst = self.instances.get(instance_id(ref, ref_loops))
            step = self.index.steps.get(ref)
            if inst is not None and step is not None and is_done(step, inst):
                visible[ref] = {"output": inst.output, "error": inst.error}
            else:
                visible[ref] = {"output": None, "error": None}
        names = {"inputs": self.state.inputs, "vars": self.state.vars(), "steps": visible}
        names.update(extra)
        return names

    # -- lists and steps --------------------------------------------------------------------

    def _list(
        self, steps: list[StepIR], loops: Loops, extra: Mapping[str, Any], key: str = ""
    ) -> Outcome:
        """A list's outcome and actions, reused from an earlier plan of the same execution
        while nothing in the list changed (its version token, see reducer._set) and the
        objects it reads are the same (the item, the variables if it reads them).
        `key`: the list's key when the caller has it (instance of its first step)."""
        if not steps:
            return DONE, None
        first = steps[0]["id"]
        if not key:
            key = instance_id(first, loops) if loops else first
        state = self.state
        deps = (
            state.versions.get(key),
            extra.get("item") if extra else None,
            state.vars() if self.index.list_uses_vars[first] else None,
        )
        memo = self.index.lists.get(key)
        if memo is not None:  # the hot path of wide flows: three identity checks
            seen = memo[0]
            if seen[0] is deps[0] and seen[1] is deps[1] and seen[2] is deps[2]:
                self.plan.actions.extend(memo[2])
                return memo[1]
        mark = len(self.plan.actions)
        outcome = self._walk_list(steps, key, loops, extra)
        self.index.lists[key] = (deps, outcome, self.plan.actions[mark:])
        return outcome

    def _walk_list(
        self, steps: list[StepIR], key: str, loops: Loops, extra: Mapping[str, Any]
    ) -> Outcome:
        start = self.state.cursors.get(key, 0)
        output: Any = None
        if start:
            last = self.instances.get(instance_id(steps[start - 1]["id"], loops))
            output = last.output if last is not None else None
        for step in steps[start:]:
            status, value = self._step(step, loops, extra)
            if status != DONE:
                return status, value
            output = value
        return DONE, output

    def _step(self, step: StepIR, loops: Loops, extra: Mapping[str, Any]) -> Outcome:
        name = instance_id(step["id"], loops)
        inst = self.instances.get(name)
        if inst is not None:
            if inst.status == COMPLETED:
                return DONE, inst.output
            if inst.status == FAILED:
                if step["on_error"] == "continue":
                    return DONE, None
                return FAIL, inst.error
        kind = step["kind"]
        timed = kind in TIMED or (kind in CONTROL and step["timeout_ms"] is not None)
        if timed and inst is None:
            self.plan.add(StartStep(name, 1))
            return BUSY, None
        if kind in EXECUTED:
            self._executed(step, name, inst, loops, extra)
        elif kind == "transform":
            self._evaluated(step, name, loops, extra)
        elif kind == "validate":
            self._validate(step, name, loops, extra)
        elif kind in TIMED:
            assert inst is not None
            self._timed(step, name, inst, loops, extra)
        else:
            return self._control(step, name, inst, loops, extra)
        return BUSY, None

    def _executed(
        self,
        step: StepIR,
        name: str,
        inst: Instance | None,
        loops: Loops,
        extra: Mapping[str, Any],
    ) -> None:
        attempt, due = 1, 0
        if inst is not None and inst.status == RETRY:
            attempt = inst.attempt + 1
            due = inst.ts + retry_delay_ms(
                step["retry"], exec_id=self.state.exec_id, step=name, attempt=inst.attempt
            )
        try:
            value = self._input(step, name, loops, extra)
        except EvalError as exc:
            self.plan.add(FailStep(name, attempt, error("expression", str(exc))))
            return
        self.plan.add(RunStep(name, attempt, step, value, step["timeout_ms"], due))

    def _input(self, step: StepIR, name: str, loops: Loops, extra: Mapping[str, Any]) -> Any:
        if step["kind"] == "http":
            headers: Template = dict(step["headers"])
            body: Template = step["body"] if step["body"] is not None else "null"
            url, filled_headers, value = self._fill(
                f"{name}#http", (step["url"], headers, body), loops, extra
            )
            return {"method": step["method"], "url": url, "headers": filled_headers, "body": value}
        template: Template = step["with"]  # type: ignore[typeddict-item]  # run/flow steps (http above)
        return self._fill(f"{name}#with", (template,), loops, extra)[0]

    def _evaluated(self, step: StepIR, name: str, loops: Loops, extra: Mapping[str, Any]) -> None:
        assert step["kind"] == "transform"
        try:
            value = self._fill(f"{name}#value", (step["value"],), loops, extra)[0]
        except EvalError as exc:
            self.plan.add(FailStep(name, 1, error("expression", str(exc))))
            return
        self.plan.add(CompleteStep(name, 1, value))

    def _validate(self, step: StepIR, name: str, loops: Loops, extra: Mapping[str, Any]) -> None:
        assert step["kind"] == "validate"
        try:
            data = self._fill(f"{name}#data", (step["data"],), loops, extra)[0]
        except EvalError as exc:
            self.plan.add(FailStep(name, 1, error("expression", str(exc))))
            return
        validator = jsonschema.Draft202012Validator(step["schema"])
        problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if problems:
            text = "; ".join(
                f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in problems
            )
            self.plan.add(FailStep(name, 1, error("validation", text)))
        else:
            self.plan.add(CompleteStep(name, 1, data))

    def _timed(
        self, step: StepIR, name: str, inst: Instance, loops: Loops, extra: Mapping[str, Any]
    ) -> None:
        if step["kind"] == "sleep":
            self.plan.add(FireTimer(name, 1, inst.ts + step["duration_ms"]))
            return
        deadline = inst.ts + (step["timeout_ms"] or 0)
        if step["kind"] == "wait_for":
            self.plan.add(AwaitEvent(name, 1, step["topic"], step["match"], deadline))
        elif step["kind"] == "approval":
            self.plan.add(
                AwaitApproval(
                    name,
                    1,
                    tuple(step["approvers"]),
                    step["quorum"],
                    inst.granted,
                    step["message"],
                    deadline,
                )
            )
        self.plan.add(FireTimer(name, 1, deadline))

    # -- control steps ------------------------------------------------------------------------

    def _control(
        self,
        step: StepIR,
        name: str,
        inst: Instance | None,
        loops: Loops,
        extra: Mapping[str, Any],
    ) -> Outcome:
        if step["kind"] == "if":
            try:
                cond = self._fill(f"{name}#if", (step["condition"],), loops, extra)[0]
            except EvalError as exc:
                self.plan.add(FailStep(name, 1, error("expression", str(exc))))
                return BUSY, None
            branch = step["then"] if cond is True else step["else"]
            status, value = self._list(branch, loops, extra)
        elif step["kind"] == "parallel":
            status, value = self._parallel(step, loops, extra)
        else:
            status, value = self._foreach(step, name, loops, extra)
        if status == DONE:
            self.plan.add(CompleteStep(name, 1, value))
        elif status == FAIL:
            self.plan.add(FailStep(name, 1, value))
        elif inst is not None and step["timeout_ms"] is not None:
            self.plan.add(FireTimer(name, 1, inst.ts + step["timeout_ms"]))
        return BUSY, None

    def _parallel(self, step: StepIR, loops: Loops, extra: Mapping[str, Any]) -> Outcome:
        assert step["kind"] == "parallel"
        branches = self.index.branches.get(step["id"])
        if branches is None:
            branches = self.index.branches[step["id"]] = sorted(step["branches"].items())
        outputs: dict[str, Any] = {}
        failures: list[tuple[str, Any]] = []
        for branch, steps in branches:
            status, value = self._list(steps, loops, extra)
            if status == DONE:
                outputs[branch] = value
            elif status == FAIL:
                failures.append((branch, value))
        if len(outputs) >= step["join"]:
            return DONE, outputs
        if len(failures) > len(branches) - step["join"]:
            message = "; ".join(f"branch {b}: {e['message']}" for b, e in failures)
            return FAIL, error("parallel", f"{len(failures)} branch(es) failed: {message}")
        return BUSY, None

    def _foreach(self, step: StepIR, name: str, loops: Loops, extra: Mapping[str, Any]) -> Outcome:
        assert step["kind"] == "foreach"
        try:
            items = self._fill(f"{name}#items", (step["items"],), loops, extra)[0]
        except EvalError as exc:
            return FAIL, error("expression", str(exc))
        if not isinstance(items, list):
            return FAIL, error("expression", f"items is not a list: {type(items).__name__}")
        if len(items) > step["max_items"]:
            return FAIL, error(
                "too_many_items", f"{len(items)} items, above max_items {step['max_items']}"
            )
        results: list[Any] = []
        failed: list[tuple[int, Any]] = []
        unfinished = 0
        policy = step["on_item_error"]
        body = step["steps"]
        for i, (inner, names, key) in enumerate(self._items(name, step["id"], body, items, loops)):
            if unfinished >= step["max_parallel"]:
                unfinished += 1  # not started yet: it waits for a free slot
                continue
            status, value = self._list(body, inner, names, key)
            if status == DONE:
                results.append(value)
                continue
            if status == FAIL:
                if policy == "stop":
                    return FAIL, error(value["kind"], f"{name}[{i}]: {value['message']}")
                failed.append((i, value))
                results.append(None)
                continue
            unfinished += 1
        if unfinished:
            return BUSY, None
        if failed and policy == "collect":
            text = "; ".join(f"[{i}] {e['kind']}: {e['message']}" for i, e in failed)
            return FAIL, error("foreach", f"{len(failed)} of {len(items)} items failed: {text}")
        return DONE, results

    def _items(
        self, name: str, loop: str, body: list[StepIR], items: list[Any], loops: Loops
    ) -> list[tuple[Loops, dict[str, Any], str]]:
        """Per item: its loops, its names and its body's list key; kept while the items
        are the same list object (their expression's memo), so wide foreach steps do not
        rebuild them on every plan."""
        cached = self.index.items.get(name)
        if cached is not None and cached[0] is items:
            return cached[1]
        first = body[0]["id"] if body else ""
        entries = []
        for i, item in enumerate(items):
            inner = (*loops, (loop, i))
            entries.append((inner, {"item": item, "index": i}, instance_id(first, inner)))
        self.index.items[name] = (items, entries)
        return entries

    # -- saga -------------------------------------------------------------------------------

    def _loop_names(self, loops: Loops) -> dict[str, Any]:
        """`item` and `index` of the innermost loop, for a compensation in a foreach body."""
        if not loops:
            return {}
        loop, i = loops[-1]
        outer = loops[:-1]
        step = self.index.steps[loop]
        assert step["kind"] == "foreach"
        name = instance_id(loop, outer)
        items = self._fill(f"{name}#items", (step["items"],), outer, self._loop_names(outer))[0]
        return {"item": items[i], "index": i}

    def _unwind(self, cause: dict[str, Any]) -> None:
        """Compensations of completed steps, newest first, one at a time; then fail."""
        for done in reversed(self.state.completed_order):
            parsed = parse_instance(done)
            assert parsed is not None
            step_id, loops = parsed
            comp = self.index.steps[step_id + COMPENSATE]
            name = done + COMPENSATE
            inst = self.instances.get(name)
            if is_done(comp, inst):
                continue
            if inst is not None and inst.status == FAILED:
                why = f"compensation {name} failed: {(inst.error or {}).get('message')}"
                self.plan.finish = FailExecution(error("compensation", why))
                self.plan.actions.append(self.plan.finish)
                return
            try:
                extra = self._loop_names(loops)
            except (EvalError, IndexError, TypeError) as exc:
                self.plan.add(FailStep(name, 1, error("expression", str(exc))))
                return
            self._executed(comp, name, inst, loops, extra)
            return
        self.plan.finish = FailExecution(cause)
        self.plan.actions.append(self.plan.finish)
