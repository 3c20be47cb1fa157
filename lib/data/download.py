"""Checked downloads: stream to a temporary file, verify, rename; retry; say how to stage by hand.

    from lib.data.download import download, verify_or_record
    sha = download(["https://mirror-a/x.gz", "https://mirror-b/x.gz"], "data/X/x.gz",
                   md5="f68b3c2d...", retries=3)
    verify_or_record("data/X/x.gz", data_dir="data", key="X/x.gz", md5=None)  # sha256 pinned on first use

Every user-fixable problem raises a DataError subclass whose message names the file,
the cause and the fix; the command-line entry points print it without a traceback.
Where no published checksum exists, the sha256 of the first copy is recorded in
<data_dir>/CHECKSUMS.json and every later use is checked against it.
"""
import datetime
import fcntl
import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHECKSUMS_FILE = "CHECKSUMS.json"
USER_AGENT = "mnist-safety/1.0 (python urllib; dataset fetch)"
CHUNK = 1 << 20


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp, dest):
    """Rename a finished temporary file onto dest with the usual permissions.

    mkstemp creates files readable by the owner only; a shared data_dir or results folder
    needs the mode an ordinary open() would have given (0666 minus the umask).
    """
    os.chmod(tmp, 0o666 & ~_current_umask())
    os.replace(tmp, dest)


def write_atomically(path, write):
    """Call write(binary file object) on a temporary file beside path, then publish it.

    A failure or a kill leaves no file at path (and removes the temporary one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class DataError(Exception):
    """A problem with a data file that the user can fix (message says how)."""


class MissingDataError(DataError, FileNotFoundError):
    pass


class ChecksumError(DataError):
    pass


class CorruptFileError(DataError):
    pass


class DownloadError(DataError):
    pass


def file_digests(path):
    """{'md5': hex, 'sha256': hex, 'size': bytes} of a file, read once."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest(), "size": size}


def checksum_problem(digests, md5=None, sha256=None, size=None, recorded=None):
    """A sentence saying which expected value the digests miss, or None when all match.

    `recorded`: a sha256 recorded on first use. Nothing vouches for it (it may be the hash
    of a bad first copy), so it is never called "expected".
    """
    if size is not None and digests["size"] != size:
        return f"size is {digests['size']} bytes, expected {size}"
    if md5 and digests["md5"] != md5.lower():
        return f"md5 is {digests['md5']}, expected {md5.lower()}"
    if sha256 and digests["sha256"] != sha256.lower():
        return f"sha256 is {digests['sha256']}, expected {sha256.lower()}"
    if recorded and digests["sha256"] != recorded.lower():
        return (f"sha256 is {digests['sha256']}, but the copy first used here had sha256 {recorded.lower()} "
                f"(recorded in {CHECKSUMS_FILE} on first use; no checksum is published for this file)")
    return None


def stage_hint(dest, urls, md5=None, sha256=None):
    """The 'stage it by hand' sentence every error about a data file ends with."""
    want = f" (md5 {md5})" if md5 else f" (sha256 {sha256})" if sha256 else ""
    where = " or ".join(urls) if urls else "its source"
    return (f"To stage it by hand: on a machine with internet, download {where}, check it{want}, "
            f"and copy it to {dest}; then rerun (with offline: true where nodes have no internet).")


class _Truncated(Exception):
    pass


def check_complete(path, name=None):
    """Raise CorruptFileError when a .npy, .zip or .gz file is visibly cut short or damaged.

    The guard for files with no checksum to compare against: their sha256 is recorded
    on first use, so a truncated first copy must be caught before it becomes the reference.
    """
    import gzip
    import zipfile
    import zlib
    import numpy as np
    name = str(name or path)
    kind = next((k for k in (".npy", ".zip", ".gz", ".tgz") if name.endswith(k)), None)
    try:
        if name.endswith(".npy"):
            np.load(path, mmap_mode="r", allow_pickle=False)
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path):
                pass
        elif name.endswith((".gz", ".tgz")):
            with gzip.open(path, "rb") as f:
                while f.read(CHUNK):
                    pass
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CorruptFileError(
            f"{name}: truncated or damaged {kind.lstrip('.').replace('tgz', 'gz')} file "
            f"({type(e).__name__}: {e}); a cut-off download looks like this. Delete it and fetch "
            f"again, or stage a good copy by hand.") from e


class _NotThere(Exception):
    """4xx from a server: retrying the same URL will not help, the next mirror might."""


def _stream(url, tmp_path, timeout_s, progress):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    md5, sha = hashlib.md5(), hashlib.sha256()
    got = 0
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if 400 <= e.code < 500:
            raise _NotThere(f"HTTP {e.code} {e.reason}") from e
        raise
    with response, open(tmp_path, "wb") as out:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        next_report = 64 << 20
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            out.write(block)
            md5.update(block)
            sha.update(block)
            got += len(block)
            if progress and got >= next_report:
                total = f" of {expected / 2**20:.0f}" if expected else ""
                print(f"  {got / 2**20:.0f}{total} MiB", file=sys.stderr, flush=True)
                next_report += 64 << 20
        out.flush()
        os.fsync(out.fileno())
    # urllib returns a short body without complaint when the server closes early,
    # so the announced length is the only sign of a cut-off transfer.
    if expected is not None and got != expected:
        raise _Truncated(f"truncated: received {got} of {expected} bytes")
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest(), "size": got}


def download(url, dest, md5=None, sha256=None, size=None, retries=3, wait_s=2.0,
             timeout_s=60.0, progress=True, recorded=None):
    """Fetch url (one URL or a list of mirrors, tried in order) to dest; return its sha256.

    Each mirror gets 1 + retries attempts; an attempt fails on a network error, a
    transfer shorter than its Content-Length, a checksum/size mismatch, or (with no
    checksum to check) a .npy/.zip/.gz that does not read to its end; `recorded`, a sha256
    recorded on first use, is held like a pin but named as what it is. The file
    appears at dest only after it passed every check (temporary file + os.replace).
    """
    urls = [url] if isinstance(url, (str, os.PathLike)) else list(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for u in map(str, urls):
        for attempt in range(1 + retries):
            if attempt and wait_s:
                time.sleep(wait_s * attempt)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            try:
                if progress:
                    print(f"downloading {u} -> {dest} (attempt {attempt + 1})", file=sys.stderr, flush=True)
                digests = _stream(u, tmp, timeout_s, progress)
                problem = checksum_problem(digests, md5, sha256, size, recorded)
                if problem is None and not (md5 or sha256 or recorded):
                    check_complete(tmp, dest.name)
                if problem is None:
                    publish(tmp, dest)
                    return digests["sha256"]
                failures.append(f"{u} (attempt {attempt + 1}): {problem}")
            except _NotThere as e:
                failures.append(f"{u}: {e}")
                break
            except (_Truncated, CorruptFileError, urllib.error.URLError, http.client.HTTPException,
                    OSError) as e:
                failures.append(f"{u} (attempt {attempt + 1}): {type(e).__name__}: {e}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    tried = "\n".join("  " + f for f in failures)
    raise DownloadError(
        f"could not download {dest.name} to {dest}.\nTried:\n{tried}\n"
        f"If every attempt failed the same checksum, the source has changed or a proxy alters it"
        + (f" (to accept the new version, remove the entry for {dest.name} from {CHECKSUMS_FILE} in "
           f"the data folder)" if recorded else "")
        + f"; otherwise check this machine's network (downloads run only in local rules, on the "
        f"submit host).\n{stage_hint(dest, [str(u) for u in urls], md5, sha256)}")


def _checksums_path(data_dir):
    return Path(data_dir) / CHECKSUMS_FILE


def recorded_checksums(data_dir):
    """The {key: {'sha256', 'source', 'recorded'}} map of <data_dir>/CHECKSUMS.json ({} if absent)."""
    path = _checksums_path(data_dir)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CorruptFileError(
            f"{path} is not valid JSON ({e}). It holds the sha256 recorded for files without a "
            f"published checksum; fix the JSON or delete the file to record them afresh.") from e


def record_checksum(data_dir, key, sha256, source):
    """Add key -> sha256 to <data_dir>/CHECKSUMS.json (locked, atomic: parallel fetches are safe).

    A data_dir that is read-only (a shared staged copy) is left alone with a warning.
    """
    path = _checksums_path(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = recorded_checksums(data_dir)
            table[key] = {"sha256": sha256, "source": source,
                          "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            text = json.dumps(table, indent=2, sort_keys=True) + "\n"
            write_atomically(path, lambda f: f.write(text.encode()))
    except PermissionError:
        print(f"warning: {path.parent} is read-only; sha256 {sha256} of {key} not recorded",
              file=sys.stderr)


def forget_checksums(data_dir, keys):
    """Remove keys from <data_dir>/CHECKSUMS.json (locked, atomic); a read-only data_dir is left alone."""
    path = _checksums_path(data_dir)
    if not path.exists():
        return
    try:
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = recorded_checksums(data_dir)
            kept = {k: v for k, v in table.items() if k not in set(keys)}
            if kept != table:
                text = json.dumps(kept, indent=2, sort_keys=True) + "\n"
                write_atomically(path, lambda f: f.write(text.encode()))
    except PermissionError:
        print(f"warning: {path.parent} is read-only; entries {sorted(keys)} not removed", file=sys.stderr)


def verify_or_record(path, data_dir, key, md5=None, sha256=None, size=None, source="", urls=()):
    """Check a present file against its pins; with no pin, against (or into) CHECKSUMS.json.

    Returns the file's digests. Raises ChecksumError naming the file, both values and the fix.
    """
    digests = file_digests(path)
    recorded = None
    if not md5 and not sha256:
        recorded = recorded_checksums(data_dir).get(key, {}).get("sha256")
        if recorded is None and checksum_problem(digests, size=size) is None:
            check_complete(path)
            record_checksum(data_dir, key, digests["sha256"], source or str(path))
            return digests
    problem = checksum_problem(digests, md5, sha256, size, recorded)
    if problem is None:
        return digests
    if recorded:
        raise ChecksumError(
            f"{path}: {problem}. Either this copy or the first one is damaged or a different version. "
            f"If this copy is the one you want, remove the entry '{key}' from {_checksums_path(data_dir)} "
            f"and rerun (its sha256 is then recorded afresh); otherwise delete it and rerun the fetch on "
            f"a machine with internet. {stage_hint(path, list(urls), md5, sha256)}")
    raise ChecksumError(
        f"{path}: {problem} (the pinned/published checksum). The file is damaged, truncated or a "
        f"different version. Delete it and rerun the fetch on a machine with internet. "
        f"{stage_hint(path, list(urls), md5, sha256)}")


def ensure_file(data_dir, relpath, urls, md5=None, sha256=None, size=None, offline=False,
                retries=3, wait_s=2.0, progress=True):
    """<data_dir>/<relpath>, verified; downloaded first when missing (never when offline).

    With no md5/sha256 pin, a sha256 already recorded for relpath is enforced on the
    download too, and a first download records its sha256.
    """
    dest = Path(data_dir) / relpath
    if dest.exists():
        verify_or_record(dest, data_dir, relpath, md5, sha256, size, source=str(dest), urls=urls)
        return dest
    if offline:
        raise MissingDataError(f"{dest} is missing and offline mode is on, so it is not downloaded. "
                               f"{stage_hint(dest, list(urls), md5, sha256)}")
    recorded = None if (md5 or sha256) else recorded_checksums(data_dir).get(relpath, {}).get("sha256")
    got = download(urls, dest, md5=md5, sha256=sha256, size=size, retries=retries,
                   wait_s=wait_s, progress=progress, recorded=recorded)
    if not (md5 or sha256 or recorded):
        record_checksum(data_dir, relpath, got, str(list(urls)[0]))
    return dest
