"""A minimal CRI v1 client, as the kubelet talks to containerd's CRI plugin.

`api.proto` (beside this file) is a subset of k8s.io/cri-api's runtime.v1; it is compiled with
grpcio-tools the first time a test imports this module, into `_generated/` (ignored by git),
and again whenever the .proto changes.

    cri = CRI("/tmp/x/ctd/containerd.sock")
    pod = cri.run_pod(cri.pod_config("p1", cgroup_parent="/t/p1", log_dir=d), handler="retinue")
    cid = cri.create(pod, cri.container_config("app", image, ["sleep", "10"]), config)
    cri.runtime.StartContainer(cri.pb.StartContainerRequest(container_id=cid))
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
PROTO = HERE / "api.proto"
GENERATED = HERE / "_generated"
RPC_TIMEOUT = 60.0


def _compile() -> Path:
    """Compile api.proto into GENERATED/<hash of the .proto>/ once; return that directory."""
    digest = hashlib.sha256(PROTO.read_bytes()).hexdigest()[:16]
    out = GENERATED / digest
    if (out / "api_pb2_grpc.py").exists():
        return out
    from grpc_tools import protoc

    GENERATED.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=GENERATED, prefix=".tmp-"))
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "grpc_tools.protoc", f"-I{HERE}", f"-I{include}", f"--python_out={tmp}",
        f"--grpc_python_out={tmp}", str(PROTO),
    ])
    if status != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"grpc_tools.protoc failed on {PROTO} with status {status}")
    try:
        tmp.rename(out)
    except OSError:  # a concurrent session compiled the same .proto first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _modules() -> tuple[ModuleType, ModuleType]:
    out = str(_compile())
    # The generated _grpc module imports `api_pb2` by its bare name.
    if out not in sys.path:
        sys.path.insert(0, out)
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


pb, pb_grpc = _modules()


class CRI:
    """RuntimeService and ImageService stubs on containerd's socket, and helpers that fill the
    requests the way the kubelet does for a pod on the node's network."""

    pb = pb

    def __init__(self, address: str) -> None:
        import grpc

        self.grpc = grpc
        self.channel = grpc.insecure_channel(f"unix://{address}")
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.images = pb_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 60.0) -> Any:
        """Version() once the CRI plugin answers (containerd's socket is up before it is)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.runtime.Version(pb.VersionRequest(version="v1"), timeout=5)
            except self.grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # --- requests as the kubelet fills them ---------------------------------------------------

    @staticmethod
    def pod_config(
        name: str, *, cgroup_parent: str, log_dir: Path, namespace: str = "default",
        attempt: int = 0, annotations: Mapping[str, str] | None = None,
    ) -> Any:
        """A pod on the node's network (no CNI), with its own pid namespace per container."""
        log_dir.mkdir(parents=True, exist_ok=True)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=name, namespace=namespace, attempt=attempt,
                uid=hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:32],
            ),
            log_directory=str(log_dir),
            annotations=dict(annotations or {}),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER,
                                                         ipc=pb.POD),
                ),
            ),
        )

    @staticmethod
    def container_config(
        name: str, image: str, command: Sequence[str], *, attempt: int = 0,
        env: Mapping[str, str] | None = None, mounts: Mapping[str, str] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> Any:
        """`mounts` maps container paths to host paths (read-write); `resources` are
        LinuxContainerResources fields (cpu_quota=..., memory_limit_in_bytes=...)."""
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=attempt),
            image=pb.ImageSpec(image=image),
            command=list(command),
            envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            mounts=[pb.Mount(container_path=c, host_path=h) for c, h in (mounts or {}).items()],
            log_path=f"{name}/{attempt}.log",
            linux=pb.LinuxContainerConfig(
                resources=pb.LinuxContainerResources(**(resources or {})),
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER,
                                                         ipc=pb.POD),
                ),
            ),
        )

    # --- calls --------------------------------------------------------------------------------

    def run_pod(self, config: Any, handler: str = "") -> str:
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        return str(self.runtime.RunPodSandbox(request, timeout=RPC_TIMEOUT).pod_sandbox_id)

    def create(self, pod_id: str, config: Any, pod_config: Any) -> str:
        request = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                            sandbox_config=pod_config)
        return str(self.runtime.CreateContainer(request, timeout=RPC_TIMEOUT).container_id)

    def start(self, container_id: str) -> None:
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id),
                                    timeout=RPC_TIMEOUT)

    def stop(self, container_id: str, timeout: int = 0) -> None:
        request = pb.StopContainerRequest(container_id=container_id, timeout=timeout)
        self.runtime.StopContainer(request, timeout=RPC_TIMEOUT + timeout)

    def remove(self, container_id: str) -> None:
        self.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id),
                                     timeout=RPC_TIMEOUT)

    def update(self, container_id: str, **resources: Any) -> None:
        """UpdateContainerResources, as the kubelet's CPU manager or an in-place resize sends
        it (LinuxContainerResources fields)."""
        request = pb.UpdateContainerResourcesRequest(
            container_id=container_id, linux=pb.LinuxContainerResources(**resources)
        )
        self.runtime.UpdateContainerResources(request, timeout=RPC_TIMEOUT)

    def status(self, container_id: str) -> Any:
        request = pb.ContainerStatusRequest(container_id=container_id)
        return self.runtime.ContainerStatus(request, timeout=RPC_TIMEOUT).status

    def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int = 60) -> Any:
        """Run `cmd` in the container as `crictl exec` and the kubelet's exec probes do."""
        request = pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        return self.runtime.ExecSync(request, timeout=RPC_TIMEOUT + timeout)

    def pod_status(self, pod_id: str) -> Any:
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
        return self.runtime.PodSandboxStatus(request, timeout=RPC_TIMEOUT).status

    def stop_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                                    timeout=RPC_TIMEOUT)

    def remove_pod(self, pod_id: str) -> None:
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                      timeout=RPC_TIMEOUT)

    def pods(self) -> list[Any]:
        return list(self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(),
                                                timeout=RPC_TIMEOUT).items)

    def containers(self, pod_id: str = "") -> list[Any]:
        request = pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=pod_id))
        return list(self.runtime.ListContainers(request, timeout=RPC_TIMEOUT).containers)

    def remove_all_pods(self) -> None:
        """Stop and remove every pod (and so its containers), as a node drain does."""
        for pod in self.pods():
            self.stop_pod(pod.id)
            self.remove_pod(pod.id)
