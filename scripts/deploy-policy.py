"""`make deploy-check`'s policy rules, over the rendered manifests (and the image's Dockerfile, and
the NATS account layout).

Schemas say whether a manifest is well formed; these rules say whether the deployment would
start, talk to what it needs, and nothing more. Each one catches a mistake this project once
shipped or a privilege it must not regain:

1. numeric-user: a pod that sets `runAsNonRoot: true` must run as a numeric user (pod or every
   container), and the image's final `USER` must be numeric: the kubelet refuses to start a
   container whose user it cannot verify as non-root ("image has non-numeric user").
2. own-pods-only: every NetworkPolicy selects only its namespace's own pods: this project's
   (`app.kubernetes.io/name` in `attendance-*`) in its namespace, the NATS servers
   (`app.kubernetes.io/name: nats`) in `nats`; never every pod of the namespace
   (`podSelector: {}`), which would cut off the database instances and operators living there.
3. egress-complete: an egress policy allows what the pods it selects need: DNS (53) for all, NATS
   (4222) for the NATS clients, PostgreSQL (5432) for the services and the migration, OTLP (4317
   or 4318, for the documented trace export) for the services, HTTPS (443) for the deliverers.
4. nats-user: every NATS client (gateway, worker, sweeper, `worker deliver`, `worker dlq`)
   connects as its own NKEY user: NATS_NKEY names a file of a mounted Secret that no other
   workload mounts, NATS_INBOX_PREFIX is set and differs from every other workload's, and no
   shared credential (NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, a user in NATS_URL) is
   given.
5. nats-tls: every NATS_URL lists only `tls://` servers and every NATS client has NATS_CA.
6. nats-accounts: what the manifests name is what deploy/nats/accounts.conf grants: each client's
   inbox prefix (`<prefix>.>`), the streams, subjects and consumer of the ConfigMap, the stream
   and consumer of KEDA's nats-jetstream triggers and their account (ATTENDANCE, never `$G`).
   And per user: the seed Secret `attendance-nats-<name>` is the user ATTENDANCE_<NAME> of the
   account, which lets that client subscribe to its inbox prefix and publish what its command
   uses (ROLES below: its streams, consumers and subjects, as the ConfigMap names them).
7. no-seeds: no Secret or ConfigMap of the manifests holds an NKEY seed (`SU…`, `SA…`, `SO…`) or
   a usable Standard Webhooks secret (`whsec_` and base64 of 24 to 64 bytes): both are made per
   installation and never committed (a placeholder the services refuse is fine).
8. postgres-tls: every DATABASE_URL asks for `sslmode=verify-full` with an `sslrootcert` (in the
   URL, or libpq's PGSSLMODE and PGSSLROOTCERT beside a URL from a Secret, such as
   CloudNativePG's `uri`, which has no TLS settings), and a CloudNativePG Cluster's pg_hba
   rejects connections without TLS first.
9. nats-ingress: the NATS pods have a default-deny ingress policy, every port opened to them
   names its sources, the cluster routes (6222) are open to NATS pods only, and every NATS client
   of the manifests may reach the client port (4222).
10. nats-keys: every user of accounts.conf has its public key: `$<USER>_NKEY` in the NATS pods'
    environment (values.yaml beside accounts.conf, `container.env`) from a key of the ConfigMap
    `attendance-nats-users` that the manifests define.
11. deliver-endpoints: `worker deliver` reads its endpoints file (DELIVERY_ENDPOINTS_FILE) from a
    mounted Secret, mounted whole (no subPath, which would never see an update), may finish its
    deliveries in flight at shutdown (terminationGracePeriodSeconds > 2 × DELIVERY_TIMEOUT + 10 s),
    and traces as itself (OTEL_SERVICE_NAME, not the worker's default).
12. egress-internet: an egress ipBlock never opens the cloud metadata service (169.254.169.254)
    or the private ranges (10/8, 172.16/12, 192.168/16, fc00::/7, fe80::/10) by being wider than
    them: they are in its `except`. (A block inside a private range is a deliberate exception.)
13. default-deny: every pod of this project is selected by a default-deny ingress policy (one
    without rules) and by an egress policy: none talks or listens beyond what is listed.

Usage: deploy-policy.py DOCKERFILE ACCOUNTS_CONF MANIFEST.yaml...
(values.yaml is read beside ACCOUNTS_CONF.) Exits 1, naming the rule and the resource, when one is
broken.
"""

import base64
import binascii
import ipaddress
import os
import re
import sys
from urllib.parse import parse_qs, urlparse

import yaml

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
OURS = re.compile(r"^attendance-")
# The pods each namespace's policies may select, by `app.kubernetes.io/name`.
OWN_PODS = {"nats": re.compile(r"^nats$")}
NATS_POD = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/component": "nats"}
SERVICES = {"attendance-gateway", "attendance-worker", "attendance-sweeper"}
# What each of this project's pods must reach: (name, accepted ports).
DNS, NATS, POSTGRES, OTLP = ("DNS 53", (53,)), ("NATS 4222", (4222,)), ("PostgreSQL 5432", (5432,)), \
    ("OTLP 4317/4318", (4317, 4318))
HTTPS = ("HTTPS 443", (443,))
NEEDS = {**{name: [DNS, NATS, POSTGRES, OTLP] for name in SERVICES},
         "attendance-deliver": [DNS, NATS, POSTGRES, OTLP, HTTPS],
         "attendance-migrate": [DNS, POSTGRES], "attendance-dlq": [DNS, NATS]}
NATS_BINARIES = {"gateway", "worker", "sweeper"}
SHARED_NATS_CREDENTIALS = ["NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS"]
SEED = re.compile(r"\bS[UAO][A-Z2-7]{56}\b")
WEBHOOK_SECRET = re.compile(r"\bwhsec_([A-Za-z0-9+/]+={0,2})")
# The settings of the services' streams, as the binaries default them (shared/src/nats/settings.rs).
STREAM_DEFAULTS = {
    "WEBHOOK_STREAM": "LIVEKIT_WEBHOOKS", "WEBHOOK_SUBJECT_PREFIX": "livekit.webhook", "DLQ_STREAM": "LIVEKIT_DLQ",
    "DLQ_SUBJECT_PREFIX": "livekit.dlq", "PRESENCE_STREAM": "LIVEKIT_PRESENCE",
    "PRESENCE_SUBJECT_PREFIX": "livekit.presence", "REPORT_STREAM": "ATTENDANCE_REPORTS",
    "REPORT_SUBJECT_PREFIX": "attendance.meeting", "CONSUMER_NAME": "attendance-worker",
}
# What each NATS client's user must be allowed to publish, by its command (binary, subcommand),
# from its environment `e` (the ConfigMap's and its own, with the defaults): one subject per use,
# with a sample for the names only known at run time (`x`, a deliverer's endpoint `deliver-x`).
ROLES = {
    ("gateway", None): lambda e: [
        f"{e['WEBHOOK_SUBJECT_PREFIX']}.participant_joined", f"{e['HEARTBEAT_SUBJECT_PREFIX']}.client_heartbeat",
        f"$JS.API.STREAM.INFO.{e['WEBHOOK_STREAM']}", f"$JS.API.STREAM.INFO.{e['HEARTBEAT_STREAM']}",
        f"$JS.API.STREAM.INFO.{e['PRESENCE_STREAM']}", f"$JS.API.CONSUMER.MSG.NEXT.{e['PRESENCE_STREAM']}.x"],
    ("worker", None): lambda e: [
        f"{e['DLQ_SUBJECT_PREFIX']}.participant_joined", f"$JS.API.STREAM.INFO.{e['DLQ_STREAM']}",
        f"$JS.API.CONSUMER.CREATE.{e['WEBHOOK_STREAM']}.{e['CONSUMER_NAME']}.{e['WEBHOOK_SUBJECT_PREFIX']}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{e['WEBHOOK_STREAM']}.{e['CONSUMER_NAME']}",
        f"$JS.ACK.{e['WEBHOOK_STREAM']}.{e['CONSUMER_NAME']}.1.1.1.1.1",
        f"$JS.API.CONSUMER.INFO.{e['WEBHOOK_STREAM']}.{e['CONSUMER_NAME']}",
        f"$JS.API.CONSUMER.MSG.NEXT.{e['HEARTBEAT_STREAM']}.{e['CONSUMER_NAME']}-heartbeats",
        f"$JS.API.CONSUMER.INFO.{e['HEARTBEAT_STREAM']}.{e['CONSUMER_NAME']}-heartbeats"],
    ("sweeper", None): lambda e: [
        f"{e['PRESENCE_SUBJECT_PREFIX']}.x", f"$JS.API.STREAM.INFO.{e['PRESENCE_STREAM']}",
        f"{e['REPORT_SUBJECT_PREFIX']}.ended", f"$JS.API.STREAM.INFO.{e['REPORT_STREAM']}"],
    ("worker", "deliver"): lambda e: [
        f"{e['DLQ_SUBJECT_PREFIX']}.delivery", f"$JS.API.STREAM.INFO.{e['DLQ_STREAM']}",
        f"$JS.API.STREAM.CREATE.{e['DLQ_STREAM']}", f"$JS.API.STREAM.INFO.{e['REPORT_STREAM']}",
        f"$JS.API.STREAM.CREATE.{e['REPORT_STREAM']}",
        f"$JS.API.CONSUMER.CREATE.{e['REPORT_STREAM']}.deliver-x.{e['REPORT_SUBJECT_PREFIX']}.>",
        f"$JS.API.CONSUMER.INFO.{e['REPORT_STREAM']}.deliver-x",
        f"$JS.API.CONSUMER.MSG.NEXT.{e['REPORT_STREAM']}.deliver-x",
        f"$JS.ACK.{e['REPORT_STREAM']}.deliver-x.1.1.1.1.1"],
    ("worker", "dlq"): lambda e: [
        f"$JS.API.STREAM.INFO.{e['DLQ_STREAM']}", f"$JS.API.STREAM.MSG.GET.{e['DLQ_STREAM']}",
        f"$JS.API.STREAM.MSG.DELETE.{e['DLQ_STREAM']}", f"{e['WEBHOOK_SUBJECT_PREFIX']}.participant_joined",
        f"{e['REPORT_SUBJECT_PREFIX']}.redeliver.x.ended"],
}
# Never opened by an egress block wider than them (rule egress-internet).
INTERNAL = [ipaddress.ip_network(net) for net in
            ["169.254.169.254/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10"]]


def name_of(resource):
    return (resource.get("metadata") or {}).get("name")


def pod_spec(resource):
    kind = resource.get("kind")
    if kind == "Pod":
        return resource.get("spec") or {}
    if kind in POD_KINDS:
        return ((resource.get("spec") or {}).get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        job = ((resource.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        return (job.get("template") or {}).get("spec") or {}
    return None


def pod_name(resource):
    """The `app.kubernetes.io/name` of a workload's pods ("" when it has none)."""
    if resource.get("kind") == "Pod":
        return ((resource.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/name", "")
    spec = resource.get("spec") or {}
    template = spec.get("template") or ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/name", "")


def numeric_user(resource, _context):
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


def selected_names(selector):
    """The `app.kubernetes.io/name` values a selector names ([] when it names none)."""
    labels = (selector or {}).get("matchLabels") or {}
    named = [labels["app.kubernetes.io/name"]] if "app.kubernetes.io/name" in labels else []
    for expression in (selector or {}).get("matchExpressions") or []:
        if expression.get("key") == "app.kubernetes.io/name" and expression.get("operator") == "In":
            named.extend(expression.get("values") or [])
    return named


def own_pods_only(resource, _context):
    if resource.get("kind") != "NetworkPolicy":
        return []
    namespace = (resource.get("metadata") or {}).get("namespace")
    own = OWN_PODS.get(namespace, OURS)
    selector = (resource.get("spec") or {}).get("podSelector")
    named = selected_names(selector)
    if named and all(own.match(name) for name in named):
        return []
    return [f"selects {selector!r}, not only the pods of namespace {namespace} ({own.pattern})"]


def egress_complete(resource, _context):
    spec = resource.get("spec") or {}
    if resource.get("kind") != "NetworkPolicy" or "Egress" not in spec.get("policyTypes", []):
        return []
    ports = {port.get("port") for rule in spec.get("egress") or [] for port in rule.get("ports") or []}
    needed = {need for name in selected_names(spec.get("podSelector")) for need in NEEDS.get(name, [])}
    missing = sorted(label for label, wanted in needed if not ports & set(wanted))
    return [f"egress does not allow {', '.join(missing)}"] if missing else []


def containers_with_env(resource, context):
    """(container, its environment as a dict, its mounts by path) of each container of a pod
    template, the ConfigMaps of `envFrom` resolved from the same manifests."""
    spec = pod_spec(resource)
    if spec is None:
        return []
    volumes = {volume.get("name"): volume for volume in spec.get("volumes") or []}
    result = []
    for container in spec.get("containers") or []:
        env = {}
        for source in container.get("envFrom") or []:
            config_map = (source.get("configMapRef") or {}).get("name")
            env.update(context["config_maps"].get(config_map, {}))
        for variable in container.get("env") or []:
            env[variable.get("name")] = variable.get("value", variable.get("valueFrom"))
        mounts = {mount.get("mountPath"): volumes.get(mount.get("name"), {})
                  for mount in container.get("volumeMounts") or []}
        result.append((container, env, mounts))
    return result


def is_nats_client(container):
    """Runs one of the binaries, as something else than the database migration."""
    command = [str(part) for part in (container.get("command") or []) + (container.get("args") or [])]
    return bool(command) and command[0].rsplit("/", 1)[-1] in NATS_BINARIES and "migrate" not in command


def nats_clients(resource, context):
    return [(container, env, mounts) for container, env, mounts in containers_with_env(resource, context)
            if is_nats_client(container)]


def seed_secret(env, mounts):
    """The name of the mounted Secret that holds the file NATS_NKEY names, or None."""
    seed = env.get("NATS_NKEY")
    return next((volume["secret"].get("secretName", "") for path, volume in mounts.items()
                 if isinstance(seed, str) and seed.startswith(path.rstrip("/") + "/") and "secret" in volume), None)


def nats_user(resource, context):
    problems = []
    for container, env, mounts in nats_clients(resource, context):
        who = f"container {container.get('name')}"
        secret = seed_secret(env, mounts)
        if secret is None:
            problems.append(f"{who}: NATS_NKEY ({env.get('NATS_NKEY')!r}) is not a file of a mounted Secret")
        else:
            owner = context["seed_secrets"].setdefault(secret, name_of(resource))
            if owner != name_of(resource):
                problems.append(f"{who}: its NKEY Secret {secret} is also {owner}'s: give it a user of its own")
        prefix = env.get("NATS_INBOX_PREFIX")
        if not isinstance(prefix, str) or not prefix or prefix == "_INBOX":
            problems.append(f"{who}: NATS_INBOX_PREFIX is not set to a prefix of its own")
        else:
            owner = context["prefixes"].setdefault(prefix, name_of(resource))
            if owner != name_of(resource):
                problems.append(f"{who}: NATS_INBOX_PREFIX {prefix} is also {owner}'s")
        shared = [name for name in SHARED_NATS_CREDENTIALS if env.get(name) is not None]
        if "@" in str(env.get("NATS_URL", "")):
            shared.append("a user in NATS_URL")
        if shared:
            problems.append(f"{who}: shared NATS credentials ({', '.join(shared)}): use its own NKEY user")
    return problems


def nats_tls(resource, context):
    urls = []
    if resource.get("kind") == "ConfigMap" and "NATS_URL" in (resource.get("data") or {}):
        urls.append(resource["data"]["NATS_URL"])
    for container in (pod_spec(resource) or {}).get("containers") or []:
        urls.extend(variable.get("value") for variable in container.get("env") or []
                    if variable.get("name") == "NATS_URL")
    problems = []
    for url in urls:
        plain = [server.strip() for server in str(url).split(",") if not server.strip().startswith("tls://")]
        if plain:
            problems.append(f"NATS_URL {url!r}: {', '.join(plain)} without tls://")
    for container, env, _mounts in nats_clients(resource, context):
        if not env.get("NATS_CA"):
            problems.append(f"container {container.get('name')}: no NATS_CA")
    return problems


def account_users(accounts):
    """The users of accounts.conf by name (`ATTENDANCE_GATEWAY = { … }`): what each may publish and
    subscribe to, and whether the account lists it (`{ nkey: $<NAME>_NKEY, permissions: $<NAME> }`)."""
    users = {}
    for name, body in re.findall(r"^(\w+)\s*=\s*\{(.*?)^\}", accounts, re.M | re.S):
        grants = {}
        for kind in ["publish", "subscribe"]:
            found = re.search(rf"{kind}\s*:\s*\{{\s*allow\s*:\s*\[(.*?)\]", body, re.S)
            grants[kind] = re.findall(r'"([^"]+)"', found.group(1)) if found else []
        grants["listed"] = bool(re.search(rf"nkey\s*:\s*\${name}_NKEY\s*,\s*permissions\s*:\s*\${name}\b", accounts))
        users[name] = grants
    return users


def subject_matches(pattern, subject):
    """Whether NATS delivers `subject` to a permission (or subscription) `pattern`."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(wanted) == len(tokens)


def granted(patterns, subject):
    return any(subject_matches(pattern, subject) for pattern in patterns)


def role(container):
    """(binary, subcommand) of a NATS client: a key of ROLES (subcommand None: the service)."""
    command = [str(part) for part in (container.get("command") or []) + (container.get("args") or [])]
    binary = command[0].rsplit("/", 1)[-1]
    subcommand = next((part for part in command[1:] if not part.startswith("-")), None)
    return binary, (subcommand if binary == "worker" and subcommand in ("dlq", "deliver") else None)


def stream_settings(env):
    settings = {key: env.get(key) or default for key, default in STREAM_DEFAULTS.items()}
    settings["HEARTBEAT_STREAM"] = env.get("HEARTBEAT_STREAM") or f"{settings['WEBHOOK_STREAM']}_HEARTBEATS"
    settings["HEARTBEAT_SUBJECT_PREFIX"] = (env.get("HEARTBEAT_SUBJECT_PREFIX")
                                            or f"{settings['WEBHOOK_SUBJECT_PREFIX']}-heartbeats")
    return settings


def nats_accounts(resource, context):
    accounts = context["accounts"]
    users = account_users(accounts)
    problems = []
    for container, env, mounts in nats_clients(resource, context):
        who = f"container {container.get('name')}"
        prefix = env.get("NATS_INBOX_PREFIX")
        if isinstance(prefix, str) and f'"{prefix}.>"' not in accounts:
            problems.append(f"{who}: accounts.conf grants no user {prefix}.>")
        secret = seed_secret(env, mounts)
        if secret is None:
            continue
        user = "ATTENDANCE_" + secret.removeprefix("attendance-nats-").upper().replace("-", "_")
        grants = users.get(user)
        if not secret.startswith("attendance-nats-") or not grants or not grants["listed"]:
            problems.append(f"{who}: its NKEY Secret {secret} is no user of accounts.conf (attendance-nats-<name>"
                            " for the user ATTENDANCE_<NAME> of the account)")
            continue
        if isinstance(prefix, str) and not granted(grants["subscribe"], f"{prefix}.x"):
            problems.append(f"{who}: {user} may not subscribe to its inbox prefix {prefix}.>")
        needed = ROLES.get(role(container), lambda _env: [])(stream_settings(env))
        refused = [subject for subject in needed if not granted(grants["publish"], subject)]
        if refused:
            problems.append(f"{who} ({' '.join(filter(None, role(container)))}): {user} may not publish "
                            + ", ".join(refused))
    if resource.get("kind") == "ConfigMap" and name_of(resource) == "attendance-config":
        data = resource.get("data") or {}
        streams = {key: data.get(key)
                   for key in ["WEBHOOK_STREAM", "DLQ_STREAM", "PRESENCE_STREAM", "REPORT_STREAM"]}
        for key, stream in streams.items():
            if stream and f"$JS.API.STREAM.INFO.{stream}\"" not in accounts:
                problems.append(f"{key} {stream}: accounts.conf grants nothing on it")
        if streams["WEBHOOK_STREAM"] and f"STREAM.INFO.{streams['WEBHOOK_STREAM']}_HEARTBEATS\"" not in accounts:
            problems.append(f"the heartbeat stream {streams['WEBHOOK_STREAM']}_HEARTBEATS: accounts.conf grants nothing")
        for key in ["WEBHOOK_SUBJECT_PREFIX", "DLQ_SUBJECT_PREFIX", "PRESENCE_SUBJECT_PREFIX", "REPORT_SUBJECT_PREFIX"]:
            prefix = data.get(key)
            if prefix and f'"{prefix}.>"' not in accounts:
                problems.append(f"{key} {prefix}: accounts.conf grants no publish to {prefix}.>")
        consumer = data.get("CONSUMER_NAME")
        if consumer and f"MSG.NEXT.{streams['WEBHOOK_STREAM'] or 'LIVEKIT_WEBHOOKS'}.{consumer}\"" not in accounts:
            problems.append(f"CONSUMER_NAME {consumer}: accounts.conf lets no user pull from it")
    if resource.get("kind") == "ScaledObject":
        for trigger in (resource.get("spec") or {}).get("triggers") or []:
            if trigger.get("type") != "nats-jetstream":
                continue
            metadata = trigger.get("metadata") or {}
            account = metadata.get("account")
            if account in (None, "$G", "SYS") or not re.search(rf"^\s*{re.escape(account)}\s*:?\s*{{", accounts, re.M):
                problems.append(f"the nats-jetstream trigger names account {account!r}, not the one of"
                                " accounts.conf that holds the streams")
            # The consumer it measures is one a user of the account pulls from.
            pull = f"$JS.API.CONSUMER.MSG.NEXT.{metadata.get('stream')}.{metadata.get('consumer')}"
            if not any(granted(grants["publish"], pull) for grants in users.values() if grants["listed"]):
                problems.append(f"the nats-jetstream trigger measures consumer {metadata.get('consumer')!r} of stream"
                                f" {metadata.get('stream')!r}, which no user of accounts.conf pulls from")
    return problems


def no_seeds(resource, _context):
    if resource.get("kind") not in {"Secret", "ConfigMap"}:
        return []
    values = {**(resource.get("data") or {}), **(resource.get("stringData") or {})}
    if resource.get("kind") == "Secret":
        # `data` is base64: what a pod reads is its decoded text.
        for key, value in (resource.get("data") or {}).items():
            try:
                values[key] = base64.b64decode(str(value), validate=True).decode("utf-8", "replace")
            except binascii.Error:
                pass
    problems = [f"key {key} holds an NKEY seed: make seeds per installation, never commit them"
                for key, value in values.items() if SEED.search(str(value))]
    problems.extend(f"key {key} holds a usable webhook secret (whsec_…): make it per installation, never commit it"
                    for key, value in values.items()
                    if any(is_webhook_key(encoded) for encoded in WEBHOOK_SECRET.findall(str(value))))
    return problems


def is_webhook_key(encoded):
    """Whether `whsec_<encoded>` is a secret `worker deliver` would sign with (24 to 64 bytes)."""
    try:
        return 24 <= len(base64.b64decode(encoded, validate=True)) <= 64
    except binascii.Error:
        return False


def postgres_tls(resource, context):
    problems = []
    if resource.get("kind") == "ConfigMap" and "DATABASE_URL" in (resource.get("data") or {}):
        problems.extend(weak_database_url(resource["data"]["DATABASE_URL"], {}))
    for container, env, _mounts in containers_with_env(resource, context):
        own = {variable.get("name"): variable for variable in container.get("env") or []}
        if "DATABASE_URL" not in own:
            continue
        # Where the URL does not say, libpq's variables do (PGSSLMODE, PGSSLROOTCERT); a URL
        # from a Secret (CloudNativePG's `uri`) has no TLS settings of its own.
        url = own["DATABASE_URL"].get("value", "")
        problems.extend(f"container {container.get('name')}: {problem}" for problem in weak_database_url(url, env))
    if resource.get("kind") == "Cluster" and str(resource.get("apiVersion", "")).startswith("postgresql.cnpg.io"):
        rules = ((resource.get("spec") or {}).get("postgresql") or {}).get("pg_hba") or []
        first = " ".join(str(rules[0]).split()) if rules else ""
        if first != "hostnossl all all all reject" or any(str(rule).split()[0] == "host" for rule in rules):
            problems.append("pg_hba must start with `hostnossl all all all reject` and allow only hostssl")
    return problems


def weak_database_url(url, env):
    """Why `url` (with libpq's variables of `env`) does not check the server's certificate."""
    query = parse_qs(urlparse(str(url)).query)
    mode = (query.get("sslmode") or [env.get("PGSSLMODE")])[0]
    root = (query.get("sslrootcert") or [env.get("PGSSLROOTCERT")])[0]
    if mode == "verify-full" and root:
        return []
    return [f"DATABASE_URL {url or '(from a Secret)'!r} does not ask for sslmode=verify-full with an sslrootcert"
            " (in the URL, or PGSSLMODE and PGSSLROOTCERT)"]


def selects_nats_pods(selector):
    labels = (selector or {}).get("matchLabels") or {}
    return all(labels.get(key) == value for key, value in NATS_POD.items())


def nats_ingress(resource, context):
    if resource.get("kind") != "NetworkPolicy" or (resource.get("metadata") or {}).get("namespace") != "nats":
        return []
    spec = resource.get("spec") or {}
    if not selects_nats_pods(spec.get("podSelector")):
        return []
    problems = []
    rules = spec.get("ingress") or []
    if "Ingress" in spec.get("policyTypes", []) and not rules:
        context["nats_default_deny"] = True
    for rule in rules:
        sources = rule.get("from") or []
        ports = {port.get("port") for port in rule.get("ports") or []}
        if not sources:
            problems.append(f"ports {sorted(ports)} are open to every source")
        if 4222 in ports:
            context["everywhere"]["nats_reachable_from"].update(
                name for source in sources for name in selected_names(source.get("podSelector")))
        if 6222 in ports and not all(selects_nats_pods(source.get("podSelector")) and "namespaceSelector" not in source
                                     for source in sources):
            problems.append("the cluster routes (6222) are open to something else than the NATS pods")
    return problems


def collect_nats_clients(resource, context):
    """Not a rule: the pods of NATS clients, for nats-ingress across the manifests."""
    if nats_clients(resource, context):
        context["everywhere"]["nats_clients"].add(pod_name(resource) or name_of(resource))
    if resource.get("kind") == "ConfigMap" and name_of(resource) == "attendance-nats-users":
        context["everywhere"]["public_keys"].update((resource.get("data") or {}).keys())
    return []


def duration_seconds(text):
    """Seconds of a humantime duration as the services take them (`10s`, `500ms`, `1m 30s`)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", str(text))
    if not parts or any(unit not in units for _, unit in parts):
        return None
    return sum(float(number) * units[unit] for number, unit in parts)


def deliver_endpoints(resource, context):
    spec = pod_spec(resource)
    problems = []
    for container, env, mounts in nats_clients(resource, context):
        if role(container) != ("worker", "deliver"):
            continue
        who = f"container {container.get('name')}"
        path = env.get("DELIVERY_ENDPOINTS_FILE") or "/etc/attendance/endpoints.yaml"
        holders = [mount for mount in container.get("volumeMounts") or []
                   if (str(path) + "/").startswith(str(mount.get("mountPath")).rstrip("/") + "/")
                   and "secret" in mounts.get(mount.get("mountPath"), {})]
        if not holders:
            problems.append(f"{who}: the endpoints file {path} is not in a mounted Secret (it holds signing secrets)")
        elif any(mount.get("subPath") for mount in holders):
            problems.append(f"{who}: the endpoints file is mounted with subPath, which never sees the Secret's updates")
        timeout = duration_seconds(env.get("DELIVERY_TIMEOUT") or "10s")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if timeout is None or grace <= 2 * timeout + 10:
            problems.append(f"{who}: terminationGracePeriodSeconds {grace} is not above 2 × DELIVERY_TIMEOUT"
                            f" ({env.get('DELIVERY_TIMEOUT') or '10s'}) + 10 s: deliveries in flight would be cut")
        if env.get("OTEL_SERVICE_NAME") in (None, "", "attendance-worker"):
            problems.append(f"{who}: OTEL_SERVICE_NAME is not set: its traces would be the worker's")
    return problems


def egress_internet(resource, _context):
    spec = resource.get("spec") or {}
    if resource.get("kind") != "NetworkPolicy" or "Egress" not in spec.get("policyTypes", []):
        return []
    problems = []
    for rule in spec.get("egress") or []:
        for peer in rule.get("to") or []:
            block = peer.get("ipBlock")
            if not block:
                continue
            cidr = ipaddress.ip_network(block.get("cidr"), strict=False)
            excepts = [ipaddress.ip_network(net, strict=False) for net in block.get("except") or []]
            opened = [internal for internal in INTERNAL if internal.version == cidr.version
                      and internal.subnet_of(cidr) and internal != cidr
                      and not any(internal.subnet_of(net) for net in excepts if net.version == cidr.version)]
            if opened:
                problems.append(f"ipBlock {cidr} opens {', '.join(map(str, opened))}: add to its except")
    return problems


RULES = [("numeric-user", numeric_user), ("own-pods-only", own_pods_only), ("egress-complete", egress_complete),
         ("nats-user", nats_user), ("nats-tls", nats_tls), ("nats-accounts", nats_accounts),
         ("no-seeds", no_seeds), ("postgres-tls", postgres_tls), ("nats-ingress", nats_ingress),
         ("deliver-endpoints", deliver_endpoints), ("egress-internet", egress_internet)]


def default_deny(resources):
    """Rule default-deny, over one rendered target: this project's pods and the policies there."""
    pods = {pod_name(resource) for resource in resources
            if pod_spec(resource) is not None and OURS.match(pod_name(resource))}
    denied, limited = set(), set()
    for policy in resources:
        spec = policy.get("spec") or {}
        if policy.get("kind") != "NetworkPolicy":
            continue
        selected = set(selected_names(spec.get("podSelector")))
        if "Ingress" in spec.get("policyTypes", []) and not spec.get("ingress"):
            denied |= selected
        if "Egress" in spec.get("policyTypes", []):
            limited |= selected
    return ([f"no default-deny ingress policy selects {name}" for name in sorted(pods - denied)]
            + [f"no egress policy selects {name}: it may connect anywhere" for name in sorted(pods - limited)])


def nats_keys(accounts, values_path, public_keys):
    """Rule nats-keys: each `$…_NKEY` of accounts.conf, from the NATS pods' environment."""
    with open(values_path) as stream:
        env = ((yaml.safe_load(stream) or {}).get("container") or {}).get("env") or {}
    problems = []
    for variable in sorted(set(re.findall(r"nkey\s*:\s*\$(\w+)", accounts))):
        source = (((env.get(variable) or {}).get("valueFrom") or {}).get("configMapKeyRef") or {})
        if source.get("name") != "attendance-nats-users":
            problems.append(f"{variable} is not in container.env from the ConfigMap attendance-nats-users:"
                            " the NATS server would not start")
        elif public_keys and source.get("key") not in public_keys:
            problems.append(f"{variable} reads key {source.get('key')!r}, which attendance-nats-users lacks")
    return problems


def main():
    dockerfile, accounts_path, manifests = sys.argv[1], sys.argv[2], sys.argv[3:]
    broken = []
    users = [line.split(None, 1)[1].strip() for line in open(dockerfile) if line.startswith("USER ")]
    if not users or not re.fullmatch(r"\d+(:\d+)?", users[-1]):
        broken.append(("numeric-user", dockerfile, f"USER {users[-1] if users else '(none)'} is not numeric"))
    with open(accounts_path) as stream:
        accounts = stream.read()
    everywhere = {"nats_clients": set(), "nats_reachable_from": set(), "public_keys": set()}
    nats_policies_seen = False
    for path in manifests:
        with open(path) as stream:
            resources = [resource for resource in yaml.safe_load_all(stream) if resource]
        context = {
            "accounts": accounts,
            "config_maps": {name_of(r): r.get("data") or {} for r in resources if r.get("kind") == "ConfigMap"},
            "prefixes": {},
            "seed_secrets": {},
            "nats_default_deny": False,
            "everywhere": everywhere,
        }
        for resource in resources:
            name = f"{path}: {resource.get('kind')}/{name_of(resource)}"
            collect_nats_clients(resource, context)
            for rule, check in RULES:
                broken.extend((rule, name, problem) for problem in check(resource, context))
        nats_pods_policies = [r for r in resources if r.get("kind") == "NetworkPolicy"
                              and (r.get("metadata") or {}).get("namespace") == "nats"]
        nats_policies_seen = nats_policies_seen or bool(nats_pods_policies)
        if nats_pods_policies and not context["nats_default_deny"]:
            broken.append(("nats-ingress", path, "no default-deny ingress policy selects the NATS pods"))
        broken.extend(("default-deny", path, problem) for problem in default_deny(resources))
    if nats_policies_seen:
        unreachable = sorted(everywhere["nats_clients"] - everywhere["nats_reachable_from"])
        if unreachable:
            broken.append(("nats-ingress", "the NATS pods' policies",
                           f"port 4222 is closed to {', '.join(unreachable)}"))
    values_path = os.path.join(os.path.dirname(accounts_path), "values.yaml")
    broken.extend(("nats-keys", values_path, problem)
                  for problem in nats_keys(accounts, values_path, everywhere["public_keys"]))
    for rule, name, problem in broken:
        print(f"[deploy-check] policy {rule}: {name}: {problem}")
    if broken:
        sys.exit(1)
    print(f"[deploy-check] policy rules hold: {', '.join([rule for rule, _ in RULES] + ['nats-keys', 'default-deny'])}")


if __name__ == "__main__":
    main()
