"""Node and actor keys on disk, in a node repository (see `qflow_node.repo.RepoPaths`).

A key file holds the raw 32-byte Ed25519 seed and nothing else, mode 0600, in `keys/`
(mode 0700). Like ssh, loading refuses a key that group or others can read: a leaked
node key lets anyone sign records, claims and votes as this node.

Keys are never overwritten: creating one that exists is an error, and creators on one
machine are serialised by a lock on the key directory, so two concurrent `qflow id new`
cannot both succeed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from qflow_node.fsio import atomic_write, fsync_dir
from qflow_node.identity.keys import SEED_LEN, IdentityError, SigningKey
from qflow_node.repo import RepoPaths

KEY_FILE_MODE: Final = 0o600
KEY_DIR_MODE: Final = 0o700
KEY_SUFFIX: Final = ".key"
# Lowercase, no path separators, no leading dot: safe as a file name everywhere.
ACTOR_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class KeyFileError(IdentityError):
    """A key file that is missing, unreadable, malformed or too widely readable."""


class KeyExistsError(KeyFileError):
    """Refused to create a key where one already exists."""


class ActorNameError(IdentityError):
    """An actor name that is not `[a-z0-9][a-z0-9._-]{0,63}`."""


def validate_actor_name(name: str) -> str:
    """Return `name` if it is a valid actor name, else raise ActorNameError."""
    if not isinstance(name, str) or not ACTOR_NAME_RE.fullmatch(name):
        raise ActorNameError(
            f"invalid actor name {name!r}: use 1-64 characters from a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def read_key_file(path: Path) -> SigningKey:
    """Load a seed file, refusing it unless it is a private 32-byte regular file."""
    try:
        # Symlinks are followed (secret mounts use them); the checks below apply to the
        # target. O_NONBLOCK keeps a FIFO planted as the key from hanging the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        # fstat the open file, not the path, so the checks apply to what is read.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        perms = stat.S_IMODE(info.st_mode)
        if perms & 0o077:
            raise KeyFileError(
                f"permissions {perms:04o} for {path} are too open; "
                f"the key must not be accessible by others: run chmod 600 {path}"
            )
        seed = _read_at_most(fd, SEED_LEN + 1)
    finally:
        os.close(fd)
    if len(seed) != SEED_LEN:
        size = info.st_size
        raise KeyFileError(
            f"key file {path} must hold a raw {SEED_LEN}-byte Ed25519 seed, found {size} bytes"
        )
    return SigningKey(seed)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write_key_file(path: Path, key: SigningKey) -> None:
    """Store `key` at `path` (0600) in an existing directory; never overwrites."""
    try:
        with _dir_lock(path.parent):
            if path.exists() or path.is_symlink():
                raise KeyExistsError(f"key file {path} already exists; refusing to overwrite it")
            atomic_write(path, key.seed, mode=KEY_FILE_MODE)
    except FileNotFoundError:
        raise KeyFileError(f"cannot write key file {path}: {path.parent} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from None


def create_node_key(paths: RepoPaths, key: SigningKey | None = None) -> SigningKey:
    """Generate (or store the given) node key; refuses if the repo already has one.

    The repo directory must exist; `keys/` is created (0700) if missing.
    """
    ensure_private_dir(paths.keys)
    key = key if key is not None else SigningKey.generate()
    write_key_file(paths.node_key, key)
    return key


def load_node_key(paths: RepoPaths) -> SigningKey:
    """The node's key, which is also its libp2p identity."""
    return read_key_file(paths.node_key)


def create_actor_key(paths: RepoPaths, name: str, key: SigningKey | None = None) -> SigningKey:
    """Generate (or store the given) key for actor `name`; refuses an existing name."""
    validate_actor_name(name)
    ensure_private_dir(paths.keys)
    ensure_private_dir(paths.actors)
    key = key if key is not None else SigningKey.generate()
    write_key_file(paths.actor_key(name), key)
    return key


def load_actor_key(paths: RepoPaths, name: str) -> SigningKey:
    validate_actor_name(name)
    path = paths.actor_key(name)
    if not path.exists() and not path.is_symlink():
        raise KeyFileError(f"no actor named {name!r} (no {path}); create it with `qflow id new`")
    return read_key_file(path)


def list_actors(paths: RepoPaths) -> list[str]:
    """Names of the actor keys in the repo, sorted. Files with invalid names are skipped."""
    try:
        entries = list(paths.actors.iterdir())
    except FileNotFoundError:
        return []
    names = (p.name.removesuffix(KEY_SUFFIX) for p in entries if p.name.endswith(KEY_SUFFIX))
    return sorted(n for n in names if ACTOR_NAME_RE.fullmatch(n))


def ensure_private_dir(directory: Path) -> None:
    """Create `directory` with mode 0700 if missing (its parent must exist).

    An existing directory is left as it is: its owner may have chosen its mode.
    """
    try:
        directory.mkdir(mode=KEY_DIR_MODE)
    except FileExistsError:
        if not directory.is_dir():
            raise KeyFileError(f"{directory} exists and is not a directory") from None
        return
    except FileNotFoundError:
        raise KeyFileError(
            f"cannot create {directory}: {directory.parent} does not exist"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {directory}: {exc.strerror}") from None
    # mkdir's mode is filtered by the umask; set it exactly.
    directory.chmod(KEY_DIR_MODE)
    fsync_dir(directory.parent)


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """Exclusive advisory lock on a directory, held while checking and creating a key."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
