"""What the planner knows of ``kubernetes``: a cloud whose regions are the kubeconfig's
contexts, at $0, whose nodes are pods made to the task's measure (`sizes.pod_size`) on the
cluster nodes that exist (the catalog `node_catalog` writes from them). No spot pods; images
are container images only; there is no disk tier to choose."""

from stixd.planner.infra_meta import InfraMeta, Role
from stixd.providers.kubernetes.sizes import parse_instance_type, pod_size

META = InfraMeta(
    name="kubernetes",
    display="Kubernetes",
    role=Role.CLOUD,
    unsupported=frozenset({"spot", "image_id", "disk_tier"}),
    sized_nodes=pod_size,
    sized_type=parse_instance_type,
    region_noun="context",
)
