"""wasmtime step runner, host functions and module cache."""
