// Checks on the manifests `helm template` renders for the airlock chart, used
// by tests/integration/helm.sh. Each subcommand reads one rendered file (a
// multi-document YAML stream) and prints one line per finding; it exits 1 if
// there was any.
//
//   validate FILE      every document against the Kubernetes API schemas
//                      (kubernetes-models) and the CRDs' schemas (cert-manager,
//                      KEDA, Prometheus operator, Gateway API); fields the
//                      API does not know are findings too (the validators
//                      alone accept them), read from the models' type
//                      declarations
//   secure FILE        the secure pod defaults on every workload, except the
//                      executor's documented needs (README "What the executor
//                      needs from the node")
//   structure FILE     what the chart promises besides: StatefulSets with one
//                      replica and a claim for intake/credstore, a Deployment
//                      per executor pool with an HPA or a ScaledObject, gateway
//                      >= 2 replicas with a PDB, relay HPA and headless
//                      Service, probes on the ops port, a config checksum
//                      that matches the ConfigMap, no Secret rendered, a
//                      NetworkPolicy per workload, certificates naming the
//                      SPIFFE ids the configs expect
//   configs FILE DIR   writes each ConfigMap's airlock.cfg to DIR/<name>.cfg
//                      and prints "<name> <binary>" per file
//   workloads FILE     prints "<workload> <binary>" per workload
//   unzip ZIP ENTRY OUT   extracts one file of a zip archive
//   podspec FILE NAME  prints the JSON of workload NAME's pod
//   podplan FILE NAME SECRETS STATE   lays out workload NAME as a pod for
//                      tests/deploy/pod.sh (see podplan below)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { parseAllDocuments } from "yaml";

const require = createRequire(import.meta.url);
const here = path.dirname(new URL(import.meta.url).pathname);
const nm = path.join(here, "node_modules");

const [cmd, file, arg] = process.argv.slice(2);
let findings = 0;
const finding = (msg) => {
  findings++;
  console.log(msg);
};

function loadDocs(f) {
  const text = fs.readFileSync(f, "utf8");
  const docs = [];
  for (const d of parseAllDocuments(text)) {
    if (d.errors.length) throw new Error(`${f}: YAML error: ${d.errors[0].message}`);
    const o = d.toJS();
    if (o !== null && o !== undefined) docs.push(o);
  }
  return docs;
}
const id = (o) => `${o.kind}/${o.metadata?.name}`;

// ---- schema validation ----------------------------------------------------

// apiVersion -> [package dir, path inside it]
function modelDir(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "") return path.join(nm, "kubernetes-models", version);
  if (group === "cert-manager.io") return path.join(nm, "@kubernetes-models/cert-manager", group, version);
  if (group === "keda.sh") return path.join(nm, "@kubernetes-models/keda", group, version);
  if (group === "monitoring.coreos.com")
    return path.join(nm, "@kubernetes-models/prometheus-operator", group, version);
  if (group === "gateway.networking.k8s.io")
    return path.join(nm, "@kubernetes-models/gateway-api", group, version);
  return path.join(nm, "kubernetes-models", group, version);
}

// The fields each interface declares, from its .d.ts: { fields: {name: typeText}, file }.
const ifaceCache = new Map();
function readIface(dts) {
  if (ifaceCache.has(dts)) return ifaceCache.get(dts);
  let text;
  try {
    text = fs.readFileSync(dts, "utf8");
  } catch {
    ifaceCache.set(dts, null);
    return null;
  }
  const imports = {};
  for (const m of text.matchAll(/import \{ ([A-Za-z0-9_, ]+) \} from "([^"]+)";/g))
    for (const n of m[1].split(",").map((s) => s.trim())) imports[n] = m[2];
  const m = text.match(/export interface (I[A-Za-z0-9]+)[^{]*\{\n([\s\S]*?)\n\}/);
  if (!m) {
    ifaceCache.set(dts, null);
    return null;
  }
  const fields = {};
  // properties at 4 spaces: "name"?: Type;  (nested inline object types are
  // not descended into: their fields are left to the schema validator)
  for (const p of m[2].matchAll(/^ {4}"([^"]+)"\??: ([^\n]*?);?$/gm)) fields[p[1]] = p[2];
  const r = { fields, imports, dir: path.dirname(dts), inline: /\{\s*$/m.test(m[2]) };
  ifaceCache.set(dts, r);
  return r;
}

function resolveType(iface, typeText) {
  const t = typeText.replace(/^Array<(.*)>$/, "$1");
  if (!/^I[A-Za-z0-9]+$/.test(t)) return null;
  const from = iface.imports[t];
  if (!from) return null;
  const p = from.startsWith(".") ? path.join(iface.dir, from) : path.join(nm, from);
  return p + ".d.ts";
}

// Walks obj along its interface; reports fields the interface does not declare.
function unknownFields(obj, dts, where, out) {
  const iface = readIface(dts);
  if (!iface || obj === null || typeof obj !== "object") return;
  if (Array.isArray(obj)) {
    obj.forEach((e, i) => unknownFields(e, dts, `${where}[${i}]`, out));
    return;
  }
  for (const [k, v] of Object.entries(obj)) {
    if (!(k in iface.fields)) {
      out.push(`${where}.${k}`);
      continue;
    }
    const sub = resolveType(iface, iface.fields[k].trim());
    if (sub) unknownFields(v, sub, `${where}.${k}`, out);
  }
}

async function validate(f) {
  const docs = loadDocs(f);
  let n = 0;
  for (const o of docs) {
    if (!o.apiVersion || !o.kind) {
      finding(`FINDING ${f}: a document without apiVersion/kind`);
      continue;
    }
    const dir = modelDir(o.apiVersion);
    const mod = path.join(dir, `${o.kind}.js`);
    if (!fs.existsSync(mod)) {
      finding(`FINDING ${id(o)}: no schema known for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    const M = require(mod)[o.kind];
    try {
      new M(o).validate();
    } catch (e) {
      finding(`FINDING ${id(o)}: ${String(e.message).split("\n").slice(0, 3).join("; ")}`);
      continue;
    }
    const unknown = [];
    const root = { ...o };
    delete root.apiVersion;
    delete root.kind;
    unknownFields(root, path.join(dir, `${o.kind}.d.ts`), o.kind, unknown);
    for (const u of unknown) finding(`FINDING ${id(o)}: field not in the ${o.apiVersion} API: ${u}`);
    n++;
  }
  console.log(`validated ${n} of ${docs.length} documents`);
}

// ---- secure defaults -------------------------------------------------------

const WORKLOADS = ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"];
// The executor's documented needs (README table); anything else on it must
// hold as on every other pod.
const EXECUTOR_CAPS = new Set(["SETUID", "SETGID", "SYS_ADMIN"]);

function podOf(o) {
  return o.kind === "CronJob" ? o.spec.jobTemplate.spec.template : o.spec.template;
}

function secure(f) {
  const docs = loadDocs(f);
  let n = 0;
  for (const o of docs.filter((d) => WORKLOADS.includes(d.kind))) {
    n++;
    const t = podOf(o);
    const ps = t.spec;
    const executor = t.metadata?.labels?.["app.kubernetes.io/component"] === "executor";
    const bad = (what) => finding(`FINDING ${id(o)}: ${what}`);
    if (ps.automountServiceAccountToken !== false) bad("automountServiceAccountToken is not false");
    if (ps.hostNetwork || ps.hostPID || ps.hostIPC) bad("shares a host namespace");
    for (const v of ps.volumes || []) if (v.hostPath) bad(`hostPath volume ${v.name}`);
    const psc = ps.securityContext || {};
    const mode = executor ? (psc.runAsUser === 0 && ps.hostUsers === false ? "userns" : "privileged") : null;
    if (!executor) {
      if (psc.runAsNonRoot !== true) bad("pod runAsNonRoot is not true");
      if (psc.seccompProfile?.type !== "RuntimeDefault") bad("pod seccomp is not RuntimeDefault");
      if (psc.runAsUser === 0) bad("pod runs as uid 0");
    }
    for (const c of [...(ps.initContainers || []), ...ps.containers]) {
      const sc = c.securityContext || {};
      const cbad = (what) => bad(`container ${c.name}: ${what}`);
      if (sc.readOnlyRootFilesystem !== true) cbad("readOnlyRootFilesystem is not true");
      if (!(sc.capabilities?.drop || []).includes("ALL")) cbad("capabilities do not drop ALL");
      if (!executor) {
        if (sc.allowPrivilegeEscalation !== false) cbad("allowPrivilegeEscalation is not false");
        if (sc.privileged) cbad("privileged");
        if ((sc.capabilities?.add || []).length) cbad(`adds capabilities ${sc.capabilities.add}`);
        if (sc.runAsNonRoot === false || sc.runAsUser === 0) cbad("may run as root");
        const sp = sc.seccompProfile?.type || psc.seccompProfile?.type;
        if (sp !== "RuntimeDefault") cbad(`seccomp ${sp}`);
        if (sc.procMount && sc.procMount !== "Default") cbad(`procMount ${sc.procMount}`);
        if (sc.appArmorProfile && sc.appArmorProfile.type !== "RuntimeDefault")
          cbad(`AppArmor ${sc.appArmorProfile.type}`);
        continue;
      }
      // executor: exactly the listed exception, nothing beyond it
      if (mode === "userns") {
        if (sc.privileged) cbad("privileged in userns mode");
        if (sc.allowPrivilegeEscalation !== false) cbad("allowPrivilegeEscalation is not false");
        for (const cap of sc.capabilities?.add || [])
          if (!EXECUTOR_CAPS.has(cap)) cbad(`capability ${cap} is not one the executor needs`);
        if (sc.procMount !== "Unmasked") cbad("procMount is not Unmasked (needed to mount the sandbox's /proc)");
      } else if (sc.privileged !== true) {
        cbad("privileged mode without privileged: true");
      }
      if (ps.hostUsers === true) cbad("hostUsers true");
    }
  }
  console.log(`checked ${n} workloads`);
}

// ---- structure -------------------------------------------------------------

function structure(f) {
  const docs = loadDocs(f);
  const by = (k) => docs.filter((d) => d.kind === k);
  const comp = (o) => (o.spec?.template?.metadata?.labels || o.metadata?.labels || {})["app.kubernetes.io/component"];
  const bad = (what) => finding(`FINDING ${what}`);
  if (by("Secret").length) bad(`the chart renders Secrets: ${by("Secret").map(id)}`);
  const cms = Object.fromEntries(by("ConfigMap").map((c) => [c.metadata.name, c]));
  const sha256 = (s) => require("node:crypto").createHash("sha256").update(s).digest("hex");
  const workloads = [...by("Deployment"), ...by("StatefulSet")];
  const policies = by("NetworkPolicy");
  const hpas = by("HorizontalPodAutoscaler");
  const scaled = by("ScaledObject");
  const pdbs = by("PodDisruptionBudget");
  const certs = by("Certificate");
  for (const w of workloads) {
    const c = comp(w);
    const t = w.spec.template;
    const ctr = t.spec.containers[0];
    // the config map it mounts, and the checksum of its content
    const vol = t.spec.volumes.find((v) => v.name === "config");
    const cm = vol && cms[vol.configMap.name];
    if (!cm) bad(`${id(w)}: mounts no rendered ConfigMap`);
    else if (t.metadata.annotations?.["checksum/config"] !== sha256(cm.data["airlock.cfg"].replace(/\n$/, "")) &&
             t.metadata.annotations?.["checksum/config"] !== sha256(cm.data["airlock.cfg"]))
      bad(`${id(w)}: checksum/config does not match ${cm.metadata.name}`);
    const ops = (ctr.ports || []).find((p) => p.name === "ops");
    if (!ops) bad(`${id(w)}: no ops port`);
    for (const [probe, p] of [["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]]) {
      const pr = ctr[probe]?.httpGet;
      if (!pr || pr.path !== p || pr.port !== "ops") bad(`${id(w)}: ${probe} is not httpGet ${p} on the ops port`);
    }
    const promPort = t.metadata.annotations?.["prometheus.io/port"];
    if (promPort !== undefined && promPort !== String(ops?.containerPort))
      bad(`${id(w)}: prometheus.io/port does not name the ops port`);
    if (cm && !cm.data["airlock.cfg"].includes(`ops_listen = "`) ) bad(`${id(w)}: config without ops_listen`);
    if (cm) {
      const m = cm.data["airlock.cfg"].match(/^ops_listen = "(.*):(\d+)";$/m);
      if (!m || Number(m[2]) !== ops?.containerPort) bad(`${id(w)}: ops_listen ${m?.[0]} is not the ops port ${ops?.containerPort}`);
    }
    const sel = w.spec.selector.matchLabels;
    const matches = (s) => Object.entries(s || {}).every(([k, v]) => sel[k] === v);
    if (!policies.some((p) => matches(p.spec.podSelector.matchLabels) && p.spec.policyTypes?.includes("Ingress") && p.spec.policyTypes?.includes("Egress")) && policies.length)
      bad(`${id(w)}: no NetworkPolicy (Ingress and Egress) selects it`);
    if (c === "intake" || c === "credstore") {
      if (w.kind !== "StatefulSet" || w.spec.replicas !== 1) bad(`${id(w)}: not a one-replica StatefulSet`);
      if (!(w.spec.volumeClaimTemplates || []).some((v) => v.metadata.name === "data") &&
          !t.spec.volumes.some((v) => v.name === "data"))
        bad(`${id(w)}: no data volume`);
    }
    if (c === "executor" || c === "relay" || c === "gateway") {
      if (w.kind !== "Deployment") bad(`${id(w)}: not a Deployment`);
      const scaler = [...hpas, ...scaled].filter((h) => h.spec.scaleTargetRef.name === w.metadata.name);
      if (c === "executor" && (scaler.length > 1 || (scaler.length === 0) === (w.spec.replicas === undefined)))
        bad(`${id(w)}: ${scaler.length} autoscalers, replicas ${w.spec.replicas} (want one HPA or ScaledObject, or fixed replicas)`);
      if (c === "relay" && !hpas.some((h) => h.spec.scaleTargetRef.name === w.metadata.name) && w.spec.replicas === undefined)
        bad(`${id(w)}: no replicas and no HPA`);
      if (c === "gateway") {
        const min = hpas.find((h) => h.spec.scaleTargetRef.name === w.metadata.name)?.spec.minReplicas ?? w.spec.replicas;
        if (!(min >= 2)) bad(`${id(w)}: fewer than 2 gateways (${min})`);
        if (!pdbs.some((p) => matches(p.spec.selector.matchLabels))) bad(`${id(w)}: no PodDisruptionBudget`);
      }
    }
    if (c === "relay") {
      const hl = by("Service").find((s) => s.spec.clusterIP === "None" && s.spec.ports.some((p) => p.name === "tunnel"));
      if (!hl) bad(`${id(w)}: no headless Service for the tunnel port`);
    }
    if (certs.length) {
      const tls = t.spec.volumes.find((v) => v.name === "tls")?.secret?.secretName;
      const cert = certs.find((x) => x.spec.secretName === tls);
      if (!cert) bad(`${id(w)}: no Certificate writes its TLS Secret ${tls}`);
      else if (!(cert.spec.uris?.length === 1 && /^spiffe:\/\/airlock\/[a-z]+\/[A-Za-z0-9._-]{1,64}$/.test(cert.spec.uris[0])))
        bad(`${id(w)}: certificate URI SANs ${cert.spec.uris}`);
      else if (!cert.spec.uris[0].startsWith(`spiffe://airlock/${c}/`)) bad(`${id(w)}: certificate role ${cert.spec.uris[0]}`);
    }
  }
  // what the configs name must be what the certificates carry
  const text = Object.values(cms).map((c) => c.data["airlock.cfg"]).join("\n");
  for (const cert of certs) {
    const uri = cert.spec.uris[0];
    const [, role] = uri.match(/^spiffe:\/\/airlock\/([a-z]+)\//);
    if ((role === "relay" || role === "intake" || role === "executor") && !text.includes(uri) && by("ConfigMap").length > 1)
      bad(`${id(cert)}: ${uri} is named by no config (issuers, pools, relay identities)`);
  }
  for (const s of scaled) {
    const q = s.spec.triggers[0].metadata.query;
    if (!q.includes("airlock_intake_pool_jobs_queued") || !/pool="[a-z0-9-]+"/.test(q) || q.includes("{{"))
      bad(`${id(s)}: query does not read the pool's own airlock_intake_pool_jobs_queued: ${q}`);
  }
  console.log(`checked ${workloads.length} workloads, ${docs.length} documents`);
}

// ---- configs / podspec (smoke test helpers) -------------------------------

function configs(f, dir) {
  const docs = loadDocs(f);
  const bin = {
    intake: "airlock-intake",
    credstore: "airlock-credstore",
    executor: "airlock-executor",
    relay: "airlock-relay",
    gateway: "airlock-gateway",
  };
  fs.mkdirSync(dir, { recursive: true });
  for (const cm of docs.filter((d) => d.kind === "ConfigMap" && d.data?.["airlock.cfg"])) {
    const c = cm.metadata.labels["app.kubernetes.io/component"];
    const name = cm.metadata.name.replace(/-config$/, "");
    fs.writeFileSync(path.join(dir, `${name}.cfg`), cm.data["airlock.cfg"]);
    console.log(`${name} ${bin[c]}`);
  }
}

function podspec(f, name) {
  const w = loadDocs(f).find((d) => WORKLOADS.includes(d.kind) && d.metadata.name === name);
  if (!w) {
    finding(`FINDING no workload ${name}`);
    return;
  }
  console.log(JSON.stringify(podOf(w)));
}


// ---- podplan: a pod of the rendered chart, laid out for tests/deploy/pod.sh ----
//
// podplan FILE WORKLOAD SECRETS STATE [POD]: materializes the workload's volumes
// as the kubelet would (ConfigMaps from the rendered file, Secrets from
// SECRETS/<secret name>/<key>, emptyDirs, the claim from a persistent
// directory) under STATE/vol/<volume>, and prints the plan pod.sh follows,
// one instruction per line:
//   hostname POD                           the pod's name (also POD_NAME)
//   user UID / group GID / groups GID...   the process's ids (securityContext)
//   caps all | none | CAP,CAP             capabilities (privileged: all)
//   nnp 0|1 / rootro 0|1                   no_new_privs, read-only root
//   hostusers 0|1                          0: the pod's own user namespace
//   env NAME=VALUE                         the container's environment
//   mount SRC DST ro|rw / tmpfs DST SIZE   the container's volume mounts
//   initmount ... / initarg ARG...         the init container, run first
//   arg ARG...                             the container's arguments
function podplan(f, name, secrets, state, podNameArg) {
  const docs = loadDocs(f);
  const w = docs.find((d) => WORKLOADS.includes(d.kind) && d.metadata.name === name);
  if (!w) {
    finding(`FINDING no workload ${name}`);
    return;
  }
  const t = podOf(w);
  const ps = t.spec;
  const psc = ps.securityContext || {};
  const fsGroup = psc.fsGroup;
  const podName = podNameArg || (w.kind === "StatefulSet" ? `${name}-0` : `${name}-pod`);
  const vols = {};
  const mk = (d, mode) => {
    fs.mkdirSync(d, { recursive: true });
    if (mode !== undefined) fs.chmodSync(d, mode);
    if (fsGroup !== undefined) fs.chownSync(d, 0, fsGroup);
  };
  const file = (dir, p, data, mode) => {
    const fp = path.join(dir, p);
    fs.mkdirSync(path.dirname(fp), { recursive: true });
    fs.writeFileSync(fp, data);
    // the kubelet: owner root, group fsGroup, mode | 0440 when fsGroup is set
    fs.chownSync(fp, 0, fsGroup ?? 0);
    fs.chmodSync(fp, fsGroup !== undefined ? mode | 0o440 : mode);
  };
  const secretKeys = (sname) => {
    const d = path.join(secrets, sname);
    if (!fs.existsSync(d)) throw new Error(`${name}: Secret ${sname} is not in ${secrets}`);
    return Object.fromEntries(fs.readdirSync(d).map((k) => [k, fs.readFileSync(path.join(d, k))]));
  };
  const project = (dir, data, items, mode) => {
    for (const it of items || Object.keys(data).map((k) => ({ key: k, path: k }))) {
      if (!(it.key in data)) throw new Error(`${name}: key ${it.key} missing`);
      file(dir, it.path, data[it.key], it.mode ?? mode);
    }
  };
  const claims = (w.spec.volumeClaimTemplates || []).map((c) => c.metadata.name);
  for (const v of [...(ps.volumes || []), ...claims.map((c) => ({ name: c, persistentVolumeClaim: {} }))]) {
    const dir = path.join(state, "vol", v.name);
    if (v.persistentVolumeClaim) {
      if (!fs.existsSync(dir)) mk(dir, 0o2775); // kept across restarts, like a claim
      vols[v.name] = { dir };
      continue;
    }
    fs.rmSync(dir, { recursive: true, force: true });
    mk(dir, 0o755);
    if (v.emptyDir) {
      fs.chmodSync(dir, 0o2777);
      // tmpfs takes k/m/g where Kubernetes quantities say Ki/Mi/Gi
      const size = String(v.emptyDir.sizeLimit || "16Mi").replace(/^(\d+)([KMG])i$/, (_, n, u) => n + u.toLowerCase());
      vols[v.name] = v.emptyDir.medium === "Memory" ? { tmpfs: size } : { dir };
    } else if (v.configMap) {
      const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === v.configMap.name);
      if (!cm) throw new Error(`${name}: ConfigMap ${v.configMap.name} not rendered`);
      project(dir, cm.data, v.configMap.items, v.configMap.defaultMode ?? 0o644);
      vols[v.name] = { dir, ro: true };
    } else if (v.secret) {
      project(dir, secretKeys(v.secret.secretName), v.secret.items, v.secret.defaultMode ?? 0o644);
      vols[v.name] = { dir, ro: true };
    } else if (v.projected) {
      for (const src of v.projected.sources)
        project(dir, secretKeys(src.secret.name), src.secret.items, v.projected.defaultMode ?? 0o644);
      vols[v.name] = { dir, ro: true };
    } else {
      throw new Error(`${name}: volume ${v.name}: unsupported source`);
    }
  }
  const out = [];
  const mounts = (c, prefix) => {
    for (const m of c.volumeMounts || []) {
      const v = vols[m.name];
      if (!v) throw new Error(`${name}: mount of unknown volume ${m.name}`);
      if (v.tmpfs) out.push(`${prefix}tmpfs ${m.mountPath} ${v.tmpfs}`);
      else out.push(`${prefix}mount ${v.dir} ${m.mountPath} ${m.readOnly || v.ro ? "ro" : "rw"}`);
    }
  };
  const ctr = ps.containers[0];
  const sc = ctr.securityContext || {};
  const uid = sc.runAsUser ?? psc.runAsUser ?? 0;
  const gid = sc.runAsGroup ?? psc.runAsGroup ?? 0;
  out.push(`hostname ${podName}`, `user ${uid}`, `group ${gid}`);
  out.push(`groups ${[gid, ...(fsGroup !== undefined ? [fsGroup] : []), ...(psc.supplementalGroups || [])].join(" ")}`);
  const add = (sc.capabilities?.add || []).map((c) => c.replace(/^CAP_/, "").toLowerCase());
  out.push(`caps ${sc.privileged ? "all" : add.length ? add.join(",") : "none"}`);
  out.push(`nnp ${sc.allowPrivilegeEscalation === false ? 1 : 0}`);
  out.push(`rootro ${sc.readOnlyRootFilesystem ? 1 : 0}`);
  out.push(`hostusers ${ps.hostUsers === false ? 0 : 1}`);
  for (const e of ctr.env || []) {
    if (e.value !== undefined) out.push(`env ${e.name}=${e.value}`);
    else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") out.push(`env ${e.name}=${podName}`);
    else throw new Error(`${name}: env ${e.name}: unsupported source`);
  }
  mounts(ctr, "");
  if ((ps.initContainers || []).length > 1) throw new Error(`${name}: more than one init container`);
  for (const ic of ps.initContainers || []) {
    mounts(ic, "init");
    for (const a of [...(ic.command || []), ...(ic.args || [])]) out.push(`initarg ${a}`);
  }
  for (const a of ctr.args || []) out.push(`arg ${a}`);
  console.log(out.join("\n"));
}

// ---- workloads / unzip (helm.sh helpers) ----------------------------------

// workloads FILE: "<name> <binary>" for every workload
function workloads(f) {
  for (const w of loadDocs(f).filter((d) => WORKLOADS.includes(d.kind)))
    console.log(`${w.metadata.name} airlock-${podOf(w).metadata.labels["app.kubernetes.io/component"]}`);
}

// unzip ZIP ENTRY OUT: extracts one file of a zip archive (stored or
// deflated) with its mode, so helm.sh needs no unzip program.
function unzipEntry(zip, entry, out) {
  const buf = fs.readFileSync(zip);
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--)
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) throw new Error(`${zip}: not a zip archive`);
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error(`${zip}: bad central directory`);
    const method = buf.readUInt16LE(p + 10);
    const csize = buf.readUInt32LE(p + 20);
    const nlen = buf.readUInt16LE(p + 28), xlen = buf.readUInt16LE(p + 30), clen = buf.readUInt16LE(p + 32);
    const attr = buf.readUInt32LE(p + 38), off = buf.readUInt32LE(p + 42);
    const name = buf.toString("utf8", p + 46, p + 46 + nlen);
    p += 46 + nlen + xlen + clen;
    if (name !== entry) continue;
    const lnlen = buf.readUInt16LE(off + 26), lxlen = buf.readUInt16LE(off + 28);
    const data = buf.subarray(off + 30 + lnlen + lxlen, off + 30 + lnlen + lxlen + csize);
    const zlib = require("node:zlib");
    const body = method === 0 ? data : method === 8 ? zlib.inflateRawSync(data) : null;
    if (!body) throw new Error(`${zip}: ${entry}: compression method ${method}`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, body, { mode: (attr >>> 16) & 0o777 || 0o755 });
    return;
  }
  throw new Error(`${zip}: no entry ${entry}`);
}

try {
switch (cmd) {
  case "validate":
    await validate(file);
    break;
  case "secure":
    secure(file);
    break;
  case "structure":
    structure(file);
    break;
  case "configs":
    configs(file, arg);
    break;
  case "podspec":
    podspec(file, arg);
    break;
  case "workloads":
    workloads(file);
    break;
  case "unzip":
    unzipEntry(file, arg, process.argv[5]);
    break;
  case "podplan":
    podplan(file, arg, process.argv[5], process.argv[6], process.argv[7]);
    break;
  default:
    console.error("usage: chart_checks.mjs validate|secure|structure FILE | configs FILE DIR | podspec FILE NAME");
    process.exit(2);
}
} catch (e) {
  finding(`FINDING ${cmd}: ${e.message}`);
}
process.exit(findings ? 1 : 0);
