"""`make deploy-check`'s policy rules, over the rendered manifests (and the image's Dockerfile).

Schemas say whether a manifest is well formed; these rules say whether the deployment would
start and talk to what it needs. Each one catches a mistake this project once shipped:

1. numeric-user: a pod that sets `runAsNonRoot: true` must run as a numeric user (pod or every
   container), and the image's final `USER` must be numeric: the kubelet refuses to start a
   container whose user it cannot verify as non-root ("image has non-numeric user").
2. own-pods-only: every NetworkPolicy selects only this project's pods (`app.kubernetes.io/name`
   in `attendance-*`), never every pod of the namespace (`podSelector: {}`), which would cut off
   the database instances and operators living there.
3. egress-complete: an egress policy allows DNS (53), NATS (4222), PostgreSQL (5432) and OTLP
   (4317 or 4318, for the documented trace export).

Usage: deploy-policy.py DOCKERFILE MANIFEST.yaml...
Exits 1, naming the rule and the resource, when one is broken.
"""

import re
import sys

import yaml

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
OURS = re.compile(r"^attendance-")


def pod_spec(resource):
    if resource.get("kind") == "Pod":
        return resource.get("spec") or {}
    if resource.get("kind") in POD_KINDS:
        return ((resource.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def numeric_user(resource):
    spec = pod_spec(resource)
    if spec is None:
        return []
    pod = spec.get("securityContext") or {}
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    problems = []
    for container in containers:
        own = container.get("securityContext") or {}
        non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot", False))
        user = own.get("runAsUser", pod.get("runAsUser"))
        if non_root and not isinstance(user, int):
            problems.append(f"container {container.get('name')} has runAsNonRoot without a numeric runAsUser")
    return problems


def selects_own_pods_only(selector):
    if not selector:
        return False
    labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    named = [labels["app.kubernetes.io/name"]] if "app.kubernetes.io/name" in labels else []
    for expression in expressions:
        if expression.get("key") == "app.kubernetes.io/name" and expression.get("operator") == "In":
            named.extend(expression.get("values") or [])
    return bool(named) and all(OURS.match(name) for name in named)


def own_pods_only(resource):
    if resource.get("kind") != "NetworkPolicy":
        return []
    selector = (resource.get("spec") or {}).get("podSelector")
    if selects_own_pods_only(selector):
        return []
    return [f"selects {selector!r}, not only this project's pods (app.kubernetes.io/name attendance-*)"]


def egress_complete(resource):
    spec = resource.get("spec") or {}
    if resource.get("kind") != "NetworkPolicy" or "Egress" not in spec.get("policyTypes", []):
        return []
    ports = {port.get("port") for rule in spec.get("egress") or [] for port in rule.get("ports") or []}
    missing = [name for name, wanted in [("DNS 53", {53}), ("NATS 4222", {4222}), ("PostgreSQL 5432", {5432}),
                                         ("OTLP 4317/4318", {4317, 4318})] if not ports & wanted]
    return [f"egress does not allow {', '.join(missing)}"] if missing else []


def main():
    dockerfile, manifests = sys.argv[1], sys.argv[2:]
    broken = []
    users = [line.split(None, 1)[1].strip() for line in open(dockerfile) if line.startswith("USER ")]
    if not users or not re.fullmatch(r"\d+(:\d+)?", users[-1]):
        broken.append(("numeric-user", dockerfile, f"USER {users[-1] if users else '(none)'} is not numeric"))
    for path in manifests:
        with open(path) as stream:
            for resource in yaml.safe_load_all(stream):
                if not resource:
                    continue
                name = f"{path}: {resource.get('kind')}/{(resource.get('metadata') or {}).get('name')}"
                for rule, check in [("numeric-user", numeric_user), ("own-pods-only", own_pods_only),
                                    ("egress-complete", egress_complete)]:
                    broken.extend((rule, name, problem) for problem in check(resource))
    for rule, name, problem in broken:
        print(f"[deploy-check] policy {rule}: {name}: {problem}")
    if broken:
        sys.exit(1)
    print("[deploy-check] policy rules hold: numeric-user, own-pods-only, egress-complete")


if __name__ == "__main__":
    main()
