"""The model repository: which versions on disk are served, their life cycle, and the repository API.

TF Serving's layout (ROOT/NAME/VERSION/saved_model.pb) and states
(START, LOADING, AVAILABLE, UNLOADING, END). A scan loads and warms new
versions before retiring removed ones, and a retired version drains its queue
first, so no request fails during a version switch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from batching import BatchConfig, Batcher, BatchObserver
from server.models.catalog import (
    ModelCatalog,
    ModelNotFound,
    ModelState,
    ModelVersion,
    VersionDescription,
)
from server.models.config import ModelConfig, ModelConfigError, VersionPolicy, load_model_config
from server.models.control import ModelControlError, check_name, check_rescan, parse_override
from server.models.disk import model_dir, scan_versions, version_stamp
from server.models.warmup_costs import seed_cost_model
from server.runtime import WorkerPool, create_pool
from server.runtime.worker_home import WorkerHome
from server.settings import Settings

log = logging.getLogger(__name__)

ObserverFactory = Callable[[ModelVersion, str], BatchObserver]  # a version and its signature label
StateListener = Callable[[ModelVersion], None]


class ModelRepository(ModelCatalog):
    """Loads, serves and retires model versions found under ``settings.model_repository``: the models its
    ``model_control_mode`` says (server/models/control.py), and answers the repository API."""

    def __init__(self, settings: Settings, make_observer: ObserverFactory | None = None,
                 on_state: StateListener | None = None, home: WorkerHome | None = None,
                 busy: Callable[[], bool] | None = None) -> None:
        """``home``: where process workers outlive this process (the supervisor's; none: they exit with it).
        ``busy``: whether the CPU this process's event loop runs on is saturated (each batcher's, see Batcher)."""
        super().__init__()
        self.settings = settings
        self._busy = busy
        self.home = home
        self.root = Path(settings.model_repository)
        self.mode = settings.model_control_mode
        self._make_observer = make_observer
        self._on_state = on_state or (lambda mv: None)
        self.on_config_error: Callable[[], None] = lambda: None  # a model.yaml's error came, changed or went
        self.strict_readiness = settings.strict_readiness
        self._lock = asyncio.Lock()
        self._default_policy = VersionPolicy.parse(settings.version_policy)
        self._failed_configs: dict[str, ModelConfig] = {}  # changed settings that failed to load: not retried
        self._overrides: dict[str, ModelConfig] = {}  # the repository API's config, over a model's model.yaml
        self._load_errors: dict[str, str] = {}  # the last API load that failed, shown in the index
        self._skipped: set[str] = set()  # folders whose names or links break the rules (warned about)
        self._wanted: set[str] | None = None  # explicit mode: the models loaded; None: every folder
        self._scanned = False  # the first scan (at start) runs in every mode; later ones as check_rescan says
        if self.mode == "explicit":
            self.empty_is_ready = True
            names = {n.strip() for n in settings.load_models.split(",") if n.strip()}
            self._wanted = None if "*" in names else names

    async def sync(self) -> None:
        """Scan the repository once: load what is new, retire what is gone."""
        if self._scanned:
            check_rescan(self.mode)
        async with self._lock:
            on_disk = self._on_disk()
            await asyncio.gather(*(self._sync_model(name, path) for name, path in on_disk.items()))
            for name in set(self._models) - set(on_disk):
                await self._retire_all(name)
            for name in set(self._config_errors) - set(on_disk):
                self._config_error(name, None)
        self._scanned = True

    def _folders(self) -> dict[str, Path]:
        """Every model folder that may be served: a valid name, inside the repository."""
        found = {}
        for path in self.root.iterdir() if self.root.is_dir() else ():
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                found[path.name] = model_dir(self.root, path.name)
            except (ModelControlError, ModelNotFound) as error:
                if path.name not in self._skipped:  # once, not at every scan
                    self._skipped.add(path.name)
                    log.warning("folder %r in the model repository is not served: %s", path.name, error)
        return found

    def _on_disk(self) -> dict[str, Path]:
        folders = self._folders()
        if self._wanted is None:
            if self.mode == "explicit":  # load_models: * — the folders of the first scan, fixed from then on
                self._wanted = set(folders)
            return folders
        missing = self._wanted - set(folders) - self._skipped
        if missing:
            self._skipped |= missing
            log.warning("models %s are to be served but have no folder in the repository", sorted(missing))
        return {name: path for name, path in folders.items() if name in self._wanted}

    async def _sync_model(self, name: str, model_dir: Path) -> None:
        try:
            override = self._overrides.get(name)
            config = override if override is not None else load_model_config(model_dir)
            on_disk = scan_versions(model_dir, synthetic=config.backend == "synthetic")
            wanted = (config.version_policy or self._default_policy).select(list(on_disk))
            config.check_labels(wanted)
            self._config_error(name, None)
        except ModelConfigError as exc:
            if self._config_errors.get(name) != str(exc):
                log.error("model %s not (re)loaded: %s", name, exc)
            self._config_error(name, str(exc))
            return  # what is loaded serves on with its last good configuration (and stays ready)
        current = self._models.setdefault(name, {})
        previous = self._configs.get(name)
        if previous is not None and config == self._failed_configs.get(name):
            config = previous  # changed settings that failed to load: serve on with the last good ones
        relabel = config.relabels(previous)  # labels only: the served versions stay as they are
        changed = previous is not None and config != previous and not relabel
        # Labels move once the versions loaded now serve, so a new label never names a version still loading.
        self._configs[name] = interim = config if previous is None else config.model_copy(
            update={"version_labels": previous.version_labels})
        to_load, renewed = [], []
        for number in sorted(wanted):
            existing = current.get(number)
            stamp = version_stamp(on_disk[number])
            if existing is None or (existing.state is ModelState.END and existing.stamp != stamp):
                mv = ModelVersion(name, number, on_disk[number], stamp, config=config)
                current[number] = mv
                to_load.append(mv)
            elif changed and existing.state is not ModelState.END:  # new settings: load beside it, then switch
                renewed.append(ModelVersion(name, number, on_disk[number], stamp, config=config))
        await asyncio.gather(*(self._load(mv) for mv in to_load + renewed))
        if renewed:
            await self._switch(name, current, renewed, previous)
        if self._configs.get(name) is interim:
            self._configs[name] = config
        if relabel:
            log.info("model %s relabelled without a reload: %s", name, config.version_labels)
            for mv in current.values():
                mv.config = config
                self._on_state(mv)  # announced (a front end's catalog holds the labels)
        # Availability first: old versions go only once a wanted one serves (or nothing is wanted).
        keep_old = bool(wanted) and not any(current[n].ready for n in wanted if n in current)
        for number, mv in list(current.items()):
            if number not in wanted and not (keep_old and mv.ready):
                await self._retire(mv)

    async def _load(self, mv: ModelVersion) -> None:
        self._set_state(mv, ModelState.LOADING)
        started = time.perf_counter()
        try:
            pool = mv.pool = create_pool(mv.config.model_spec(mv.path, self.settings),
                                         mv.config.worker_spec(self.settings), self.home)
            await pool.start()
            mv.description = VersionDescription(pool.signature, pool.backend, pool.device, pool.instances,
                                                pool.batch_sizes, pool.signatures)
            mv.load_seconds = time.perf_counter() - started
            batch = mv.batch_config = mv.config.batch_config(self.settings, pool.instances, pool.batch_sizes)
            # Warm-up runs exactly the batch sizes the batcher will send, so tracing happens before traffic.
            sizes = mv.config.warmup_sizes(batch.max_batch_size, batch.allowed_batch_sizes)
            warmed = []
            if self.settings.warmup:
                started = time.perf_counter()
                warmup = await pool.warm_up(sizes)
                mv.warmup_seconds = time.perf_counter() - started
                mv.warmup_complete, warmed = warmup.complete, warmup.ran
            batchers = self._batchers(mv, pool, batch)
            mv.batchers, mv.batcher = dict(batchers), batchers[pool.signature.name]
            for name, batcher in batchers.items():  # SLO scheduling starts from timings
                await seed_cost_model(batcher, pool, warmed, signature=name)
        except Exception as exc:
            mv.error = str(exc) or type(exc).__name__
            log.error("model %s version %d failed to load: %s", mv.name, mv.version, mv.error)
            if mv.pool is not None:
                await mv.pool.close()
                mv.pool = None
            self._set_state(mv, ModelState.END)
            return
        log.info("model %s version %d AVAILABLE (backend %s on %s): loaded in %.2fs, warmed up in %.2fs",
                 mv.name, mv.version, mv.backend, mv.device, mv.load_seconds, mv.warmup_seconds)
        self._set_state(mv, ModelState.AVAILABLE)

    def _batchers(self, mv: ModelVersion, pool: WorkerPool, config: BatchConfig) -> dict[str, Batcher]:
        """One batcher per served signature, over the version's one pool. Their series carry the signature's
        name only where the version serves several (else the label is empty, which Prometheus drops)."""
        several = len(pool.signatures) > 1
        batchers: dict[str, Batcher] = {}
        for name in pool.signatures:
            label = name if several else ""
            observer = self._make_observer(mv, label) if self._make_observer else None
            run = functools.partial(pool.run, signature=name) if several else pool.run
            batchers[name] = Batcher(run, config, observer=observer, busy=self._busy,
                                     name=f"{mv.name}:{mv.version}" + (f":{name}" if several else ""))
        return batchers

    async def _switch(self, name: str, current: dict[int, ModelVersion], renewed: list[ModelVersion],
                      previous: ModelConfig | None) -> None:
        """Served versions loaded and warmed again with changed settings: each replaces its old one, which
        drains. If any failed to load, none switches: the old ones serve on with their settings."""
        if any(not mv.ready for mv in renewed):
            self._failed_configs[name] = renewed[0].config
            if previous is not None:
                self._configs[name] = previous
            log.error("model %s keeps its previous settings: the changed ones failed to load", name)
            for mv in renewed:
                await self._drain_replaced(mv)
            for mv in current.values():
                if mv.ready:
                    self._set_state(mv, mv.state)  # its series, as the failed load left them, restored
            return
        self._failed_configs.pop(name, None)
        for mv in renewed:
            old, current[mv.version] = current.get(mv.version), mv
            if old is not None:
                await self._drain_replaced(old)
            self._set_state(mv, mv.state)  # announced in the catalog; its series (shared with the old) kept
            log.info("model %s version %d switched to its changed settings", name, mv.version)

    async def _drain_replaced(self, mv: ModelVersion) -> None:
        """Retire a version whose successor (same name and version) serves: no state notices, which
        would remove the metric series the two share."""
        if mv.batchers:
            mv.state = ModelState.UNLOADING
            await asyncio.gather(*(batcher.close(drain=True) for batcher in mv.batchers.values()))
        if mv.pool is not None:
            await mv.pool.close()
        mv.state = ModelState.END

    async def _retire(self, mv: ModelVersion) -> None:
        if mv.state is ModelState.AVAILABLE:
            self._set_state(mv, ModelState.UNLOADING)
            assert mv.pool is not None
            await asyncio.gather(*(batcher.close(drain=True) for batcher in mv.batchers.values()))
            await mv.pool.close()
            log.info("model %s version %d unloaded", mv.name, mv.version)
        self._set_state(mv, ModelState.END)
        if self._models.get(mv.name, {}).get(mv.version) is mv:
            self._models[mv.name].pop(mv.version)

    async def _retire_all(self, name: str) -> None:
        for mv in list(self._models.get(name, {}).values()):
            await self._retire(mv)
        self._models.pop(name, None)
        self._configs.pop(name, None)

    def _config_error(self, name: str, error: str | None) -> None:
        """Keep a model's model.yaml error (None: it has none); ``on_config_error`` hears of each change."""
        if self._config_errors.get(name) == error:
            return
        if error is None:
            del self._config_errors[name]
        else:
            self._config_errors[name] = error
        self.on_config_error()

    def _set_state(self, mv: ModelVersion, state: ModelState) -> None:
        mv.state = state
        self._on_state(mv)

    async def poll(self) -> None:
        """Rescan every ``poll_interval`` seconds until cancelled (in ``poll`` mode)."""
        interval = self.settings.poll_interval if self.mode == "poll" else 0
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:  # a scan must never stop the server
                log.exception("repository scan failed")

    async def close(self) -> None:
        """Drain and unload everything."""
        async with self._lock:
            for name in list(self._models):
                await self._retire_all(name)

    # ---- the repository API --------------------------------------------------------

    def _check_mode(self, action: str) -> None:
        if self.mode != "explicit":
            raise ModelControlError(f"{action} is refused: the server runs with model_control_mode={self.mode}; "
                                    "start it with --model-control-mode explicit to load and unload models")

    async def load_model(self, name: str, config: dict[str, object] | None = None) -> None:
        self._check_mode("load")
        override = parse_override(config) if config is not None else None
        path = model_dir(self.root, name)
        try:  # checked now, so a broken model.yaml is the answer, not a log line
            asked = override if override is not None else load_model_config(path)
        except ModelConfigError as error:
            raise ModelControlError(f"model {name!r} was not loaded: {error}") from None
        async with self._lock:
            assert self._wanted is not None
            fresh = not any(mv.ready for mv in self._models.get(name, {}).values())
            if fresh:
                self._failed_configs.pop(name, None)  # nothing served: nothing to keep serving
            self._wanted.add(name)
            if override is not None:
                self._overrides[name] = override
            else:
                self._overrides.pop(name, None)
            await self._sync_model(name, path)
            versions = self._models.get(name, {})
            problem = self._config_errors.get(name) if fresh else None  # e.g. a label for no served version
            if problem is not None:
                self._config_error(name, None)
            if problem is not None or not versions:
                problem = problem or "it has no version folder with a model"
            elif not any(mv.ready for mv in versions.values()):
                problem = next((mv.error for mv in versions.values() if mv.error), "no version became ready")
            if problem is not None and fresh:  # undone: a failed load leaves the server as it was (and ready)
                self._wanted.discard(name)
                self._overrides.pop(name, None)
                for mv in versions.values():
                    mv.error = None  # retired on purpose now: its series go, no not-ready alert for it
                await self._retire_all(name)
                self._load_errors[name] = f"failed to load: {problem}"
                raise ModelControlError(f"model {name!r} was not loaded: {problem}")
            self._load_errors.pop(name, None)
        if problem is not None:
            raise ModelControlError(f"model {name!r} failed to load: {problem}")
        if (kept := self._config_errors.get(name)) is not None:
            raise ModelControlError(f"model {name!r} serves on with its previous settings: {kept}")
        if self._failed_configs.get(name) == asked:
            raise ModelControlError(f"model {name!r} serves on with its previous settings: the new ones failed "
                                    "to load (the server log says why)")

    async def unload_model(self, name: str) -> None:
        self._check_mode("unload")
        check_name(name)
        async with self._lock:
            assert self._wanted is not None
            if name not in self._wanted and name not in self._models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._wanted.discard(name)
            self._overrides.pop(name, None)
            self._failed_configs.pop(name, None)
            self._load_errors.pop(name, None)
            await self._retire_all(name)
            self._config_error(name, None)

    async def index(self, ready_only: bool = False) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for name in sorted(set(self._folders()) | set(self.names())):
            versions = self._models.get(name, {})
            if not versions:
                if not ready_only:
                    rows.append({"name": name, "version": "", "state": "UNAVAILABLE",
                                 "reason": self.config_error(name) or self._load_errors.get(name, "unloaded")})
                continue
            for mv in sorted(versions.values(), key=lambda mv: mv.version):
                if not ready_only or mv.ready:
                    rows.append(_row(mv, self.config_error(name)))
        return rows


TRITON_STATES = {ModelState.AVAILABLE: "READY", ModelState.LOADING: "LOADING", ModelState.UNLOADING: "UNLOADING",
                 ModelState.START: "LOADING", ModelState.END: "UNAVAILABLE"}


def _row(mv: ModelVersion, config_error: str | None = None) -> dict[str, object]:
    reason = mv.error or (f"serving its last good configuration; {config_error}" if config_error and mv.ready else "")
    row: dict[str, object] = {"name": mv.name, "version": str(mv.version), "state": TRITON_STATES[mv.state],
                              "reason": reason, "backend": mv.backend, "device": mv.device}
    if mv.description is not None:
        row["instances"] = mv.description.instances  # over every device (the batches it runs at once)
    pids = getattr(mv.pool, "pids", None)
    if pids is not None:
        row["worker_pids"] = pids
    return row
