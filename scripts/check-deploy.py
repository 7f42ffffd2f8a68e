#!/usr/bin/env python3
"""Validate the Kubernetes manifests under deploy/k8s/.

  python scripts/check-deploy.py [DIR]      (DIR defaults to deploy/k8s next to this script)

Every YAML document is checked against a schema:
- built-in kinds (Deployment, Service, ServiceAccount, Role, RoleBinding,
  HorizontalPodAutoscaler) with kubernetes-validate in strict mode (unknown fields are
  errors), for the oldest Kubernetes the manifests claim (1.30: preStop `sleep`) and the
  newest that kubernetes-validate ships;
- InferencePool (Gateway API Inference Extension v1) and HTTPRoute (Gateway API v1)
  against JSON schemas below, written from their published API references.
Then the documents are checked against each other and against smelt's flags: selectors,
ports, probes, the endpoint picker reference, the HPA target, grace periods.

Before any of that, a self-test runs the same checks on a small valid set of documents
(it must pass) and on broken variants of it (each must be rejected, for the expected
reason), so that a pass means something.

Needs PyYAML, jsonschema and kubernetes-validate (scripts/fetch-test-models.sh puts them
in its venv). Prints one line per document, then "all deploy manifests valid"; on any
problem prints file, document and problem, and exits 1.
"""

import copy
import os
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

MIN_K8S = "1.30"
K8S_VERSIONS = [MIN_K8S, ".".join(kubernetes_validate.latest_version().split(".")[:2])]
K8S_KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "HorizontalPodAutoscaler",
}
SMELT_SHUTDOWN_GRACE_DEFAULT = 10  # smelt's --shutdown-grace default, seconds
K8S_GRACE_DEFAULT = 30  # terminationGracePeriodSeconds when unset
EPP_GRPC_PORT_DEFAULT = 9002  # the EPP's --grpc-port default
GIE_GROUP = "inference.networking.k8s.io"

# --- schemas for the CRD kinds ---------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GROUP = {"type": "string", "maxLength": 253, "pattern": "^$|" + DNS_SUBDOMAIN}
KIND = {"type": "string", "minLength": 1, "maxLength": 63,
        "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"}
NAME = {"type": "string", "minLength": 1, "maxLength": 253}
NAMESPACE = {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS_LABEL}
LABEL_VALUE = {"type": "string", "maxLength": 63,
               "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}

# The ObjectMeta fields a hand-written manifest uses; anything else is most likely a typo.
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": NAMESPACE,
        "labels": {"type": "object", "additionalProperties": LABEL_VALUE},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

# InferencePool v1 (inference.networking.k8s.io). targetPorts: 1..8 unique ports in the
# current API (v1.0.x CRDs allowed one; see cross_check); appProtocol is newer than v1.0.
# endpointPickerRef is required by v1.0.x and optional later: required here.
INFERENCE_POOL_PORT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["number"],
    "properties": {"number": PORT_NUMBER},
}
INFERENCE_POOL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": GIE_GROUP + "/v1"},
        "kind": {"const": "InferencePool"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "targetPorts", "endpointPickerRef"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 64,
                            "additionalProperties": LABEL_VALUE,
                        }
                    },
                },
                "targetPorts": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 8,
                    "uniqueItems": True,  # items hold only `number`: unique numbers
                    "items": INFERENCE_POOL_PORT,
                },
                "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
                "endpointPickerRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "group": GROUP,
                        "kind": KIND,  # default Service
                        "name": NAME,
                        "port": INFERENCE_POOL_PORT,
                        "failureMode": {"enum": ["FailOpen", "FailClose"]},
                    },
                    # port is required when kind is Service or absent.
                    "if": {
                        "anyOf": [
                            {"not": {"required": ["kind"]}},
                            {"properties": {"kind": {"const": "Service"}}},
                        ]
                    },
                    "then": {"required": ["port"]},
                },
            },
        },
    },
}

# HTTPRoute v1 (gateway.networking.k8s.io), standard channel. Filters are only checked
# for their `type`; everything else is closed.
HEADER_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "value"],
    "properties": {
        "type": {"enum": ["Exact", "RegularExpression"]},
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "value": {"type": "string", "minLength": 1, "maxLength": 4096},
    },
}
HTTP_FILTER = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror",
                          "RequestRedirect", "URLRewrite", "ExtensionRef", "CORS"]}
    },
}
DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
HTTP_ROUTE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "group": GROUP,
                            "kind": KIND,
                            "namespace": NAMESPACE,
                            "name": NAME,
                            "sectionName": {"type": "string", "minLength": 1,
                                            "maxLength": 253, "pattern": DNS_SUBDOMAIN},
                            "port": PORT_NUMBER,
                        },
                    },
                },
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {"type": "string", "minLength": 1, "maxLength": 253},
                },
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 253,
                                     "pattern": DNS_SUBDOMAIN},
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {"enum": ["Exact", "PathPrefix",
                                                                  "RegularExpression"]},
                                                "value": {"type": "string",
                                                          "maxLength": 1024},
                                            },
                                            # Exact and PathPrefix (the default) are
                                            # absolute paths.
                                            "if": {"not": {"properties": {"type": {
                                                "const": "RegularExpression"}}}},
                                            "then": {"properties": {"value": {
                                                "pattern": "^/"}}},
                                        },
                                        "headers": {"type": "array", "maxItems": 16,
                                                    "items": HEADER_MATCH},
                                        "queryParams": {"type": "array", "maxItems": 16,
                                                        "items": HEADER_MATCH},
                                        "method": {"enum": ["GET", "HEAD", "POST", "PUT",
                                                            "DELETE", "CONNECT", "OPTIONS",
                                                            "TRACE", "PATCH"]},
                                    },
                                },
                            },
                            "filters": {"type": "array", "maxItems": 16,
                                        "items": HTTP_FILTER},
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "group": GROUP,
                                        "kind": KIND,  # default Service
                                        "name": NAME,
                                        "namespace": NAMESPACE,
                                        "port": PORT_NUMBER,
                                        "weight": {"type": "integer", "minimum": 0,
                                                   "maximum": 1000000},
                                        "filters": {"type": "array", "maxItems": 16,
                                                    "items": HTTP_FILTER},
                                    },
                                },
                            },
                            "timeouts": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"request": DURATION,
                                               "backendRequest": DURATION},
                            },
                        },
                    },
                },
            },
        },
    },
}

CRD_SCHEMAS = {"InferencePool": INFERENCE_POOL, "HTTPRoute": HTTP_ROUTE}
for _schema in CRD_SCHEMAS.values():
    jsonschema.Draft202012Validator.check_schema(_schema)


# --- per-document schema check ---------------------------------------------------------

def path_of(error):
    return ".".join(str(p) for p in error.absolute_path) or "(document)"


def schema_problems(doc):
    """Problems of one document against its kind's schema."""
    if not isinstance(doc, dict):
        return ["not a mapping"]
    kind = doc.get("kind")
    if kind in K8S_KINDS:
        problems = []
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"kubernetes {e.version}: {path_of(e)}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(e.message)
        return problems
    if kind in CRD_SCHEMAS:
        validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[kind])
        return [f"{path_of(e)}: {e.message}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))]
    return [f"unexpected kind {kind!r} (apiVersion {doc.get('apiVersion')!r})"]


# --- consistency between documents ----------------------------------------------------

def name_of(doc):
    return (doc.get("metadata") or {}).get("name")


def arg_value(args, flag):
    """The value of `flag` in an argument list (`--flag V` or `--flag=V`), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(deploy):
    return deploy.get("spec", {}).get("template", {}).get("spec", {})


def pod_labels(deploy):
    return deploy.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})


def container_port(container, port):
    """The number a probe or Service port (a number or a port name) reaches, or None."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p.get("containerPort")
    return None


def picker_config_problems(args):
    """The EPP's scheduling configuration: given, and (when inline) well formed."""
    if arg_value(args, "--config-file") is not None:
        return []  # a mounted file: not visible here
    text = arg_value(args, "--config-text")
    if text is None:
        return ["the endpoint picker has neither --config-text nor --config-file "
                "(v1.0's does not start without one)"]
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"--config-text is not YAML: {e}"]
    if not isinstance(cfg, dict) or (cfg.get("apiVersion"), cfg.get("kind")) != (
            "inference.networking.x-k8s.io/v1alpha1", "EndpointPickerConfig"):
        return ["--config-text is not an inference.networking.x-k8s.io/v1alpha1 "
                "EndpointPickerConfig"]
    defined = {p.get("name", p.get("type")) for p in cfg.get("plugins") or []}
    refs = {r.get("pluginRef") for prof in cfg.get("schedulingProfiles") or []
            for r in prof.get("plugins") or []}
    if not defined:
        return ["--config-text defines no plugins"]
    return [f"--config-text: profile plugin {r!r} is not defined" for r in sorted(refs - defined)]


def cross_check(docs):
    """Problems between documents, as (document index, problem); docs are (where, doc)."""
    problems = []
    by_kind = {}
    for i, (_, doc) in enumerate(docs):
        if isinstance(doc, dict):
            by_kind.setdefault(doc.get("kind"), []).append((i, doc))

    def one(kind):
        found = by_kind.get(kind, [])
        if len(found) != 1:
            problems.append((None, f"expected one {kind}, found {len(found)}"))
            return None, None
        return found[0]

    pool_i, pool = one("InferencePool")
    if pool is None:
        return problems
    spec = pool.get("spec", {})
    selector = spec.get("selector", {}).get("matchLabels", {})
    deployments = by_kind.get("Deployment", [])
    services = by_kind.get("Service", [])

    # The model server: the one Deployment whose pods the pool selects.
    selected = [(i, d) for i, d in deployments if matches(selector, pod_labels(d))]
    if len(selected) != 1:
        names = [name_of(d) for _, d in selected]
        problems.append((pool_i, f"spec.selector.matchLabels {selector} must select the pods "
                                 f"of exactly one Deployment, selects {names}"))
        return problems
    smelt_i, smelt = selected[0]
    pspec = pod_spec(smelt)
    containers = pspec.get("containers", [])
    # The container named smelt, else the first.
    container = next((c for c in containers if c.get("name") == "smelt"),
                     containers[0] if containers else {})
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    args = [str(a) for a in container.get("args", [])]
    target = [p.get("number") for p in spec.get("targetPorts", [])]

    for n in target:
        if n not in ports:
            problems.append((pool_i, f"targetPort {n} is not a container port of "
                                     f"Deployment {name_of(smelt)} {ports}"))
    listen = arg_value(args, "--port")
    if listen is None or int(listen) not in target:
        problems.append((smelt_i, f"smelt's --port {listen} is not the pool's targetPort {target}"))
    if arg_value(args, "--host") not in ("0.0.0.0", "::"):
        problems.append((smelt_i, f"smelt's --host {arg_value(args, '--host')} is not 0.0.0.0: "
                                  "the pod would listen on loopback only"))
    if arg_value(args, "--api-key") is not None:
        problems.append((smelt_i, "the API key is a literal --api-key argument: pass it as "
                                  "SMELT_API_KEY from a Secret"))
    for e in container.get("env", []):
        if e.get("name") == "SMELT_API_KEY" and "value" in e:
            problems.append((smelt_i, "SMELT_API_KEY is a literal value: take it from a Secret "
                                      "(valueFrom.secretKeyRef)"))

    # Probes: all three, on /health, on the port the pool targets.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe)
        if not p:
            problems.append((smelt_i, f"container {container.get('name')}: no {probe}"))
            continue
        get = p.get("httpGet") or {}
        if get.get("path") != "/health":
            problems.append((smelt_i, f"{probe} must be an httpGet of /health, "
                                      f"is {get.get('path')!r}"))
        if container_port(container, get.get("port")) not in target:
            problems.append((smelt_i, f"{probe} port {get.get('port')!r} is not the "
                                      f"container port the pool targets {target}"))

    def window(p):
        return (p or {}).get("failureThreshold", 3) * (p or {}).get("periodSeconds", 10)

    grace = int(arg_value(args, "--shutdown-grace") or SMELT_SHUTDOWN_GRACE_DEFAULT)
    sleep = (container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
             .get("seconds", 0))
    termination = pspec.get("terminationGracePeriodSeconds", K8S_GRACE_DEFAULT)
    if termination <= grace + sleep:
        problems.append((smelt_i, f"terminationGracePeriodSeconds {termination} must exceed "
                                  f"the preStop sleep {sleep} s + --shutdown-grace {grace} s"))
    if window(container.get("startupProbe")) < 300:
        problems.append((smelt_i, f"startupProbe gives {window(container.get('startupProbe'))} s "
                                  "for loading the model; allow at least 300"))
    if window(container.get("livenessProbe")) <= grace:
        problems.append((smelt_i, "livenessProbe would restart a pod draining for "
                                  f"--shutdown-grace {grace} s (/health is 503 then)"))
    scrape_port = (smelt.get("spec", {}).get("template", {}).get("metadata", {})
                   .get("annotations", {}).get("prometheus.io/port"))
    if scrape_port is not None and int(scrape_port) not in target:
        problems.append((smelt_i, f"prometheus.io/port {scrape_port} is not smelt's port"))

    # The smelt Service reaches the same pods and port.
    for i, svc in services:
        sel = svc.get("spec", {}).get("selector", {})
        if sel == selector or matches(sel, pod_labels(smelt)):
            for p in svc.get("spec", {}).get("ports", []):
                if container_port(container, p.get("targetPort", p.get("port"))) not in target:
                    problems.append((i, f"port {p.get('name')}: targetPort "
                                        f"{p.get('targetPort')!r} is not smelt's port"))

    # The endpoint picker: a Service with the referenced port, its Deployment, its pool.
    ref = spec.get("endpointPickerRef", {})
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") != "":
        problems.append((pool_i, "endpointPickerRef must reference a core Service"))
    epp_svc = [(i, s) for i, s in services if name_of(s) == ref.get("name")]
    ref_port = (ref.get("port") or {}).get("number")
    if not epp_svc:
        problems.append((pool_i, f"endpointPickerRef names Service {ref.get('name')!r}, "
                                 "which is not in the manifests"))
    else:
        svc_i, svc = epp_svc[0]
        svc_port = [p for p in svc.get("spec", {}).get("ports", []) if p.get("port") == ref_port]
        epp = [(i, d) for i, d in deployments
               if matches(svc.get("spec", {}).get("selector", {}), pod_labels(d))]
        if not svc_port:
            problems.append((pool_i, f"endpointPickerRef port {ref_port} is not a port of "
                                     f"Service {name_of(svc)}"))
        if len(epp) != 1:
            problems.append((svc_i, "the endpoint picker Service must select the pods of "
                                    f"exactly one Deployment, selects {[name_of(d) for _, d in epp]}"))
        elif svc_port:
            epp_i, epp_d = epp[0]
            epp_c = (pod_spec(epp_d).get("containers") or [{}])[0]
            epp_args = [str(a) for a in epp_c.get("args", [])]
            p = svc_port[0]
            reached = container_port(epp_c, p.get("targetPort", p.get("port")))
            grpc = int(arg_value(epp_args, "--grpc-port") or EPP_GRPC_PORT_DEFAULT)
            if reached != grpc:
                problems.append((svc_i, f"port {ref_port} reaches container port {reached}, "
                                        f"not the picker's gRPC port {grpc}"))
            if arg_value(epp_args, "--pool-name") != name_of(pool):
                problems.append((epp_i, f"--pool-name {arg_value(epp_args, '--pool-name')!r} "
                                        f"is not the InferencePool {name_of(pool)!r}"))
            for p in picker_config_problems(epp_args):
                problems.append((epp_i, p))
            # v1.0.x pickers come with CRDs that take one target port and no appProtocol.
            image = epp_c.get("image", "")
            if ":v1.0." in image and (len(target) != 1 or "appProtocol" in spec):
                problems.append((pool_i, f"{image} pairs with v1.0 CRDs: one targetPort "
                                         "and no appProtocol"))

    # The route sends its traffic to this pool.
    for i, route in by_kind.get("HTTPRoute", []):
        refs = [b for r in route.get("spec", {}).get("rules", [])
                for b in r.get("backendRefs", [])]
        if not any(b.get("kind") == "InferencePool" and b.get("group") == GIE_GROUP
                   and b.get("name") == name_of(pool) for b in refs):
            problems.append((i, f"no backendRef to InferencePool {name_of(pool)!r} "
                                f"(group {GIE_GROUP})"))

    # The HPA scales the model server.
    for i, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        t = hpa.get("spec", {}).get("scaleTargetRef", {})
        if (t.get("apiVersion"), t.get("kind"), t.get("name")) != (
                "apps/v1", "Deployment", name_of(smelt)):
            problems.append((i, f"scaleTargetRef {t} is not Deployment {name_of(smelt)!r}"))
    return problems


# --- running the checks ---------------------------------------------------------------

def describe(where, doc):
    file, n = where
    if isinstance(doc, dict):
        return f"{file}: document {n} ({doc.get('kind')}/{name_of(doc)})"
    return f"{file}: document {n}"


def all_problems(docs):
    """Every problem of a document set, as printable lines."""
    out = []
    for where, doc in docs:
        out += [f"{describe(where, doc)}: {p}" for p in schema_problems(doc)]
    try:
        crossed = cross_check(docs)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
        # A document of the wrong shape; its schema problems above say which.
        return out + [f"manifests: cannot cross-check ({type(e).__name__}: {e})"]
    for i, p in crossed:
        out.append(f"{describe(*docs[i])}: {p}" if i is not None else f"manifests: {p}")
    return out


def load(directory):
    docs = []
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        sys.exit(f"check-deploy: no YAML files in {directory}")
    for f in files:
        try:
            parsed = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as e:
            sys.exit(f"{f}: not valid YAML: {e}")
        n = 0
        for doc in parsed:
            if doc is None:  # an empty document, e.g. after a trailing ---
                continue
            n += 1
            docs.append(((os.path.relpath(f), n), doc))
    return docs


# A small valid set of documents for the self-test, independent of deploy/k8s so that
# the self-test means the same whatever state the real files are in.
SELF_TEST_BASE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: smelt}
spec:
  selector: {matchLabels: {app: smelt}}
  template:
    metadata: {labels: {app: smelt}}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: smelt
          image: smelt:latest
          args: [--host, 0.0.0.0, --port, "8000", --shutdown-grace, "20", gguf, -f, /m.gguf]
          ports: [{name: http, containerPort: 8000}]
          startupProbe: {httpGet: {path: /health, port: http}, periodSeconds: 10, failureThreshold: 60}
          readinessProbe: {httpGet: {path: /health, port: 8000}, periodSeconds: 5}
          livenessProbe: {httpGet: {path: /health, port: http}, periodSeconds: 20, failureThreshold: 3}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: picker}
spec:
  selector: {matchLabels: {app: picker}}
  template:
    metadata: {labels: {app: picker}}
    spec:
      containers:
        - name: epp
          image: registry.k8s.io/gateway-api-inference-extension/epp:v1.0.1
          args:
            - --pool-name
            - pool
            - --config-text
            - |
              apiVersion: inference.networking.x-k8s.io/v1alpha1
              kind: EndpointPickerConfig
              plugins: [{type: queue-scorer}]
          ports: [{name: grpc, containerPort: 9002}]
---
apiVersion: v1
kind: Service
metadata: {name: picker}
spec:
  selector: {app: picker}
  ports: [{name: grpc, port: 9002, targetPort: grpc}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool}
spec:
  selector: {matchLabels: {app: smelt}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: picker, port: {number: 9002}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: smelt}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: smelt}
  maxReplicas: 2
  metrics:
    - type: Pods
      pods: {metric: {name: waiting}, target: {type: AverageValue, averageValue: "4"}}
"""


def self_test():
    """The base set passes; broken variants of it are each rejected, for the right reason."""
    docs = [(("self-test", n + 1), d)
            for n, d in enumerate(yaml.safe_load_all(SELF_TEST_BASE))]
    problems = all_problems(docs)
    assert not problems, f"self-test: the valid base set was rejected: {problems}"

    def find(d, kind, name=None):
        for _, doc in d:
            if doc.get("kind") == kind and (name is None or name_of(doc) == name):
                return doc
        raise AssertionError(f"self-test: no {kind} {name or ''}")

    def smelt_pod(d):
        return pod_spec(find(d, "Deployment", "smelt"))

    cases = [
        ("InferencePool with 9 targetPorts", "is too long",
         lambda d: find(d, "InferencePool")["spec"].__setitem__(
             "targetPorts", [{"number": 8000 + k} for k in range(9)])),
        ("InferencePool with an unknown spec field", "Additional properties",
         lambda d: find(d, "InferencePool")["spec"].__setitem__("modelServerPort", 8000)),
        ("InferencePool with a repeated target port", "non-unique",
         lambda d: find(d, "InferencePool")["spec"].__setitem__(
             "targetPorts", [{"number": 8000}, {"number": 8000}])),
        ("InferencePool with an unknown failureMode", "is not one of",
         lambda d: find(d, "InferencePool")["spec"]["endpointPickerRef"].__setitem__(
             "failureMode", "FailSafe")),
        ("InferencePool picker Service without a port", "'port' is a required property",
         lambda d: find(d, "InferencePool")["spec"]["endpointPickerRef"].pop("port")),
        ("Deployment with a misspelled field", "'terminationGracePeriodSecond' was unexpected",
         lambda d: smelt_pod(d).__setitem__(
             "terminationGracePeriodSecond", smelt_pod(d).pop("terminationGracePeriodSeconds"))),
        ("HPA with a misspelled metric field", "'nmae' was unexpected",
         lambda d: find(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]
         ["metric"].__setitem__("nmae", "x")),
        ("HTTPRoute with an unknown path match type", "is not one of",
         lambda d: find(d, "HTTPRoute")["spec"]["rules"][0]["matches"][0]["path"]
         .__setitem__("type", "Prefix")),
        ("pool selector matching no pods", "must select the pods",
         lambda d: find(d, "InferencePool")["spec"]["selector"].__setitem__(
             "matchLabels", {"app": "nothing"})),
        ("readiness probe on another path", "readinessProbe must be an httpGet of /health",
         lambda d: smelt_pod(d)["containers"][0]["readinessProbe"]["httpGet"].__setitem__(
             "path", "/healthz")),
        ("API key as a literal argument", "literal --api-key",
         lambda d: smelt_pod(d)["containers"][0]["args"].extend(["--api-key", "sekret"])),
        ("grace period shorter than the drain", "must exceed",
         lambda d: smelt_pod(d).__setitem__("terminationGracePeriodSeconds", 20)),
        ("liveness probe restarting a draining pod", "would restart a pod draining",
         lambda d: smelt_pod(d)["containers"][0]["livenessProbe"].__setitem__(
             "failureThreshold", 1)),
        ("picker watching another pool", "--pool-name",
         lambda d: pod_spec(find(d, "Deployment", "picker"))["containers"][0]["args"]
         .__setitem__(1, "other")),
        ("picker without a scheduling configuration", "neither --config-text",
         lambda d: pod_spec(find(d, "Deployment", "picker"))["containers"][0].__setitem__(
             "args", ["--pool-name", "pool"])),
        ("route to a Service of the pool's name", "no backendRef to InferencePool",
         lambda d: find(d, "HTTPRoute")["spec"]["rules"][0]["backendRefs"][0].pop("kind")),
        ("picker reference on a port the Service lacks", "is not a port of Service",
         lambda d: find(d, "InferencePool")["spec"]["endpointPickerRef"]["port"].__setitem__(
             "number", 9999)),
        ("HPA on another Deployment", "scaleTargetRef",
         lambda d: find(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].__setitem__(
             "name", "picker")),
        ("smelt listening on loopback", "--host",
         lambda d: smelt_pod(d)["containers"][0].__setitem__(
             "args", [a for a in smelt_pod(d)["containers"][0]["args"]
                      if a not in ("--host", "0.0.0.0")])),
    ]
    for name, expect, mutate in cases:
        broken = copy.deepcopy(docs)
        mutate(broken)
        problems = all_problems(broken)
        assert any(expect in p for p in problems), (
            f"self-test: {name} was not rejected with {expect!r}; problems: {problems}")
    print(f"self-test: a valid set passes, {len(cases)} broken variants of it are rejected")


def dockerfile_problems(root):
    """deploy/Dockerfile's build stage: every COPY source exists and is let through by
    /.dockerignore (a `*` followed by `!path` exceptions), and every workspace member of
    Cargo.toml is copied (Cargo reads the whole workspace before building one package)."""
    import re
    problems = []
    keep = [line[1:].strip().rstrip("/") for line in (root / ".dockerignore").read_text().splitlines()
            if line.startswith("!")]

    def shipped(path):
        return any(path == k or path.startswith(k + "/") for k in keep)

    copied = []
    for line in (root / "deploy" / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for src in [p for p in parts[1:-1] if not p.startswith("--")]:
            src = src.rstrip("/")
            copied.append(src)
            if not (root / src).exists():
                problems.append(f"deploy/Dockerfile copies {src}, which does not exist")
            elif not shipped(src):
                problems.append(f"deploy/Dockerfile copies {src}, which .dockerignore leaves out")
    cargo = (root / "Cargo.toml").read_text()
    m = re.search(r"^members\s*=\s*\[([^\]]*)\]", cargo, re.M)
    for member in re.findall(r'"([^"]+)"', m.group(1)) if m else []:
        if member != "." and not any(c == f"{member}/Cargo.toml" or c == member for c in copied):
            problems.append(f"deploy/Dockerfile does not copy workspace member {member}/Cargo.toml")
    return problems


def main():
    here = Path(__file__).resolve().parent
    for p in dockerfile_problems(here.parent):
        sys.exit(f"check-deploy: {p}")
    print("ok deploy/Dockerfile: COPY sources exist, pass .dockerignore, cover the workspace")
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "deploy" / "k8s"
    try:
        self_test()
    except AssertionError as e:
        sys.exit(str(e))
    docs = load(directory)
    problems = all_problems(docs)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        sys.exit(f"check-deploy: {len(problems)} problem(s)")
    for where, doc in docs:
        how = (f"kubernetes {', '.join(K8S_VERSIONS)} strict" if doc["kind"] in K8S_KINDS
               else "schema from the API reference")
        print(f"ok {describe(where, doc)}: {how}")
    print("cross-document checks passed")
    print("all deploy manifests valid")


if __name__ == "__main__":
    main()
