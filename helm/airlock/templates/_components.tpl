{{/*
airlock.components: every enabled component as one object, so that every
template (workloads, services, config maps, certificates, policies,
autoscalers, monitors) iterates over the same list and nothing can drift.
Output: JSON {"items": [ component, ... ]}. A component:

  name        resource suffix: intake, credstore, relay, gateway, executor-<pool>
  component   kind of service (label app.kubernetes.io/component)
  pool        executor pool name ("" for the others)
  kind        StatefulSet | Deployment
  binary      the service binary in the image
  role, identity   SPIFFE id spiffe://airlock/<role>/<identity>
  v           the component's values (a pool: executor values merged with the pool's)
  ports       container ports [{name, port}]; "ops" is always there
  server      1 if other workloads dial it over TLS (certificate DNS names)
  tlsSecret   Secret with tls.crt, tls.key, ca.crt
  config      the service's config (chart defaults merged with v.config)
  volumes     [{name, source (a Volume minus its name), mountPath}]
  env         extra environment computed by the chart
  init        init container command (credstore: copies the master keys), or []
  persistence the PVC values of a StatefulSet with persistence enabled, or absent
  hpa, keda, pdb   autoscaling / ScaledObject / PodDisruptionBudget values, or absent
*/}}
{{- define "airlock.components" -}}
{{- $root := . -}}
{{- $V := .Values -}}
{{- $full := include "airlock.fullname" . -}}
{{- $items := list -}}
{{- $tlsPaths := dict "cert_file" "/etc/airlock/tls/tls.crt" "key_file" "/etc/airlock/tls/tls.key" "ca_file" "/etc/airlock/tls/ca.crt" -}}
{{- $intakeHost := include "airlock.svcHost" (dict "root" $root "svc" (printf "%s-intake" $full)) -}}
{{- $credstoreHost := include "airlock.svcHost" (dict "root" $root "svc" (printf "%s-credstore" $full)) -}}
{{- $relayTunnelHost := include "airlock.svcHost" (dict "root" $root "svc" (printf "%s-relay-tunnel" $full)) -}}
{{- $pools := list -}}
{{- if $V.executor.enabled -}}
{{- range $V.executor.pools -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$" .name) -}}
{{- fail (printf "executor.pools: pool name %q must be 1-20 characters of [a-z0-9-], starting and ending alphanumeric" .name) -}}
{{- end -}}
{{- $pools = append $pools .name -}}
{{- end -}}
{{- if ne (len $pools) (len (uniq $pools)) -}}
{{- fail "executor.pools: pool names must be unique" -}}
{{- end -}}
{{- end -}}
{{- $tunnelsOn := or $V.relay.enabled $V.gateway.enabled -}}
{{- if and $tunnelsOn (not $V.tunnels) -}}
{{- fail "tunnels: relay and gateway need at least one tunnel with one server (or set relay.enabled=false and gateway.enabled=false)" -}}
{{- end -}}

{{- /* ---------------- intake ---------------- */ -}}
{{- if $V.intake.enabled -}}
{{- $v := $V.intake -}}
{{- if ne (int $v.replicaCount) 1 -}}
{{- fail "intake.replicaCount must be 1: the job store is SQLite (one writer)" -}}
{{- end -}}
{{- $gk := default (printf "%s-intake-grant-key" $full) $v.grantKey.existingSecret -}}
{{- $cfg := dict
  "listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.grpc))
  "ops_listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.ops))
  "log_level" $V.global.logLevel
  "tls" (merge (dict "client_cert" "optional") $tlsPaths)
  "data_dir" "/var/lib/airlock/data"
  "grant" (dict "key_file" (printf "/etc/airlock/grant/%s" $v.grantKey.keyKey))
-}}
{{- if $pools -}}
{{- $ip := list -}}
{{- range $V.executor.pools -}}
{{- $ident := default (printf "executor-%s" .name) .identity -}}
{{- $extra := include "airlock.deepMerge" (dict "base" $V.executor.intakePool "over" .intakePool) | fromJson -}}
{{- $ip = append $ip (merge (dict "name" .name "executors" (list (printf "spiffe://airlock/executor/%s" $ident))) $extra) -}}
{{- end -}}
{{- $_ := set $cfg "pools" $ip -}}
{{- end -}}
{{- $vols := list
  (dict "name" "grant" "mountPath" "/etc/airlock/grant" "source" (dict "secret" (dict "secretName" $gk "defaultMode" 288 "items" (list (dict "key" $v.grantKey.keyKey "path" $v.grantKey.keyKey)))))
  (dict "name" "data" "mountPath" "/var/lib/airlock" "source" (ternary (dict "persistentVolumeClaim" (dict "claimName" "data")) (dict "emptyDir" dict) $v.persistence.enabled))
-}}
{{- $c := dict "name" "intake" "component" "intake" "pool" "" "kind" "StatefulSet" "binary" "airlock-intake"
  "role" "intake" "identity" $v.identity "v" $v "server" 1
  "ports" (list (dict "name" "grpc" "port" $v.containerPorts.grpc) (dict "name" "ops" "port" $v.containerPorts.ops))
  "tlsSecret" (default (printf "%s-intake-tls" $full) $V.tls.existingSecrets.intake)
  "config" (include "airlock.deepMerge" (dict "base" $cfg "over" $v.config) | fromJson) "volumes" $vols "env" list "init" list -}}
{{- if $v.persistence.enabled }}{{ $_ := set $c "persistence" $v.persistence }}{{ end -}}
{{- $items = append $items $c -}}
{{- end -}}

{{- /* ---------------- credstore ---------------- */ -}}
{{- if $V.credstore.enabled -}}
{{- $v := $V.credstore -}}
{{- if ne (int $v.replicaCount) 1 -}}
{{- fail "credstore.replicaCount must be 1: the store is SQLite (one writer)" -}}
{{- end -}}
{{- $mk := default (printf "%s-credstore-master-key" $full) $v.masterKey.existingSecret -}}
{{- $sources := list (dict "secret" (dict "name" $mk "items" (list (dict "key" $v.masterKey.key "path" "current.key")))) -}}
{{- $copy := list "install" "-m" "0600" "-t" "/run/airlock/keys" "/etc/airlock/master-keys/current.key" -}}
{{- $prev := list -}}
{{- range $i, $p := $v.masterKey.previous -}}
{{- $sources = append $sources (dict "secret" (dict "name" $p.existingSecret "items" (list (dict "key" (default "master.key" $p.key) "path" (printf "previous-%d.key" $i))))) -}}
{{- $copy = append $copy (printf "/etc/airlock/master-keys/previous-%d.key" $i) -}}
{{- $prev = append $prev (printf "/run/airlock/keys/previous-%d.key" $i) -}}
{{- end -}}
{{- $issuers := list -}}
{{- $vols := list
  (dict "name" "master-keys" "mountPath" "/etc/airlock/master-keys" "init" true "source" (dict "projected" (dict "defaultMode" 288 "sources" $sources)))
  (dict "name" "keys" "mountPath" "/run/airlock/keys" "init" true "source" (dict "emptyDir" (dict "medium" "Memory" "sizeLimit" "1Mi")))
  (dict "name" "data" "mountPath" "/var/lib/airlock" "source" (ternary (dict "persistentVolumeClaim" (dict "claimName" "data")) (dict "emptyDir" dict) $v.persistence.enabled))
-}}
{{- if $V.intake.enabled -}}
{{- $s := $v.issuerScopes.intake -}}
{{- $issuers = append $issuers (dict "issuer" (printf "spiffe://airlock/intake/%s" $V.intake.identity) "public_key_file" "/etc/airlock/issuers/intake/grant.pub" "principals" $s.principals "pools" $s.pools "credentials" $s.credentials) -}}
{{- $vols = append $vols (dict "name" "issuer-intake" "mountPath" "/etc/airlock/issuers/intake" "source" (dict "secret" (dict "secretName" (default (printf "%s-intake-grant-key" $full) $V.intake.grantKey.existingSecret) "defaultMode" 292 "items" (list (dict "key" $V.intake.grantKey.pubKey "path" "grant.pub"))))) -}}
{{- end -}}
{{- if $V.relay.enabled -}}
{{- $s := $v.issuerScopes.relay -}}
{{- $issuers = append $issuers (dict "issuer" (printf "spiffe://airlock/relay/%s" $V.relay.identity) "public_key_file" "/etc/airlock/issuers/relay/grant.pub" "principals" $s.principals "routes" $s.routes "credentials" $s.credentials) -}}
{{- $vols = append $vols (dict "name" "issuer-relay" "mountPath" "/etc/airlock/issuers/relay" "source" (dict "secret" (dict "secretName" (default (printf "%s-relay-grant-key" $full) $V.relay.grantKey.existingSecret) "defaultMode" 292 "items" (list (dict "key" $V.relay.grantKey.pubKey "path" "grant.pub"))))) -}}
{{- end -}}
{{- $cfg := dict
  "listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.grpc))
  "ops_listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.ops))
  "log_level" $V.global.logLevel
  "tls" (deepCopy $tlsPaths)
  "data_dir" "/var/lib/airlock/data"
  "master_key_file" "/run/airlock/keys/current.key"
-}}
{{- if $prev }}{{ $_ := set $cfg "previous_master_key_files" $prev }}{{ end -}}
{{- if $issuers }}{{ $_ := set $cfg "issuers" $issuers }}{{ end -}}
{{- $c := dict "name" "credstore" "component" "credstore" "pool" "" "kind" "StatefulSet" "binary" "airlock-credstore"
  "role" "credstore" "identity" $v.identity "v" $v "server" 1
  "ports" (list (dict "name" "grpc" "port" $v.containerPorts.grpc) (dict "name" "ops" "port" $v.containerPorts.ops))
  "tlsSecret" (default (printf "%s-credstore-tls" $full) $V.tls.existingSecrets.credstore)
  "config" (include "airlock.deepMerge" (dict "base" $cfg "over" $v.config) | fromJson) "volumes" $vols "env" list "init" $copy -}}
{{- if $v.persistence.enabled }}{{ $_ := set $c "persistence" $v.persistence }}{{ end -}}
{{- $items = append $items $c -}}
{{- end -}}

{{- /* ---------------- executor pools ---------------- */ -}}
{{- if $V.executor.enabled -}}
{{- $base := omit (deepCopy $V.executor) "pools" "enabled" -}}
{{- range $V.executor.pools -}}
{{- $v := include "airlock.deepMerge" (dict "base" $base "over" (omit . "name" "identity")) | fromJson -}}
{{- $ident := default (printf "executor-%s" .name) .identity -}}
{{- $binds := list -}}
{{- if $v.sandboxRootfs -}}
{{- range list "usr" "bin" "sbin" "lib" "lib64" "etc/alternatives" "etc/ld.so.cache" "etc/ssl" -}}
{{- $binds = append $binds (printf "%s/%s:/%s" $v.sandboxRootfs . .) -}}
{{- end -}}
{{- end -}}
{{- $sandbox := dict "work_dir" "/run/airlock-sandbox" -}}
{{- if $binds }}{{ $_ := set $sandbox "ro_binds" $binds }}{{ end -}}
{{- if eq $v.sandboxHost.mode "userns" -}}
{{- /* hostUsers: false gives the pod 65536 ids: the jobs' ids must map inside them */ -}}
{{- $_ := set $sandbox "id_base" (int $v.sandboxHost.idBase) -}}
{{- end -}}
{{- $cfg := dict
  "listen" ""
  "ops_listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.ops))
  "log_level" $V.global.logLevel
  "tls" (deepCopy $tlsPaths)
  "intake" (dict "addr" (printf "%s:%d" $intakeHost (int $V.intake.service.port)))
  "pools" (list .name)
  "sandbox" $sandbox
-}}
{{- $cfg = include "airlock.deepMerge" (dict "base" $cfg "over" $v.config) | fromJson -}}
{{- if eq $v.sandboxHost.mode "userns" -}}
{{- $top := add (int (default 30000 $cfg.sandbox.id_base)) (int (default 1000 $cfg.sandbox.uid)) -}}
{{- if ge (int $top) 65536 -}}
{{- fail (printf "executor pool %s: userns mode maps 65536 ids, but sandbox.id_base + sandbox.uid = %d" .name (int $top)) -}}
{{- end -}}
{{- end -}}
{{- $env := list -}}
{{- if not (and (hasKey $cfg.sandbox "name") $cfg.sandbox.name) -}}
{{- /* each pod its own sandbox name (cgroups, run directory) */ -}}
{{- $env = append $env (dict "name" "AIRLOCK_SANDBOX_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) -}}
{{- end -}}
{{- $vols := list (dict "name" "work" "mountPath" "/run/airlock-sandbox" "source" (dict "emptyDir" (dict "sizeLimit" $v.workDir.sizeLimit))) -}}
{{- $c := dict "name" (printf "executor-%s" .name) "component" "executor" "pool" .name "kind" "Deployment" "binary" "airlock-executor"
  "role" "executor" "identity" $ident "v" $v "server" 0
  "ports" (list (dict "name" "ops" "port" $v.containerPorts.ops))
  "tlsSecret" (default (default (printf "%s-executor-%s-tls" $full .name) $V.tls.existingSecrets.executor) .tlsSecret)
  "config" $cfg "volumes" $vols "env" $env "init" list -}}
{{- if $v.keda.enabled -}}
{{- $_ := set $c "keda" $v.keda -}}
{{- else if $v.autoscaling.enabled -}}
{{- $_ := set $c "hpa" $v.autoscaling -}}
{{- end -}}
{{- $items = append $items $c -}}
{{- end -}}
{{- end -}}

{{- /* ---------------- relay ---------------- */ -}}
{{- if $V.relay.enabled -}}
{{- $v := $V.relay -}}
{{- $gk := default (printf "%s-relay-grant-key" $full) $v.grantKey.existingSecret -}}
{{- $ak := default (printf "%s-relay-agent-keys" $full) $v.agentKeys.existingSecret -}}
{{- $tunnels := list -}}
{{- range $V.tunnels -}}
{{- $tunnels = append $tunnels (dict "name" .name "gateways" (default (list (printf "spiffe://airlock/gateway/%s" $V.gateway.identity)) .gateways)) -}}
{{- end -}}
{{- $agents := dict "listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.agents)) "keys_file" (printf "/etc/airlock/agent-keys/%s" $v.agentKeys.key) -}}
{{- $vols := list
  (dict "name" "grant" "mountPath" "/etc/airlock/grant" "source" (dict "secret" (dict "secretName" $gk "defaultMode" 288 "items" (list (dict "key" $v.grantKey.keyKey "path" $v.grantKey.keyKey)))))
  (dict "name" "agent-keys" "mountPath" "/etc/airlock/agent-keys" "source" (dict "secret" (dict "secretName" $ak "defaultMode" 288)))
-}}
{{- if $v.agentCert.existingSecret -}}
{{- $_ := set $agents "cert_file" "/etc/airlock/agent-tls/tls.crt" -}}
{{- $_ := set $agents "key_file" "/etc/airlock/agent-tls/tls.key" -}}
{{- $vols = append $vols (dict "name" "agent-tls" "mountPath" "/etc/airlock/agent-tls" "source" (dict "secret" (dict "secretName" $v.agentCert.existingSecret "defaultMode" 288))) -}}
{{- end -}}
{{- $cfg := dict
  "listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.grpc))
  "ops_listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.ops))
  "log_level" $V.global.logLevel
  "tls" (deepCopy $tlsPaths)
  "agents" $agents
  "tunnel" (dict "listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.tunnel)))
  "tunnels" $tunnels
  "grant" (dict "key_file" (printf "/etc/airlock/grant/%s" $v.grantKey.keyKey))
-}}
{{- $c := dict "name" "relay" "component" "relay" "pool" "" "kind" "Deployment" "binary" "airlock-relay"
  "role" "relay" "identity" $v.identity "v" $v "server" 1
  "ports" (list (dict "name" "agents" "port" $v.containerPorts.agents) (dict "name" "tunnel" "port" $v.containerPorts.tunnel) (dict "name" "grpc" "port" $v.containerPorts.grpc) (dict "name" "ops" "port" $v.containerPorts.ops))
  "tlsSecret" (default (printf "%s-relay-tls" $full) $V.tls.existingSecrets.relay)
  "config" (include "airlock.deepMerge" (dict "base" $cfg "over" $v.config) | fromJson) "volumes" $vols "env" list "init" list -}}
{{- if $v.autoscaling.enabled }}{{ $_ := set $c "hpa" $v.autoscaling }}{{ end -}}
{{- if $v.pdb.enabled }}{{ $_ := set $c "pdb" $v.pdb }}{{ end -}}
{{- $items = append $items $c -}}
{{- end -}}

{{- /* ---------------- gateway ---------------- */ -}}
{{- if $V.gateway.enabled -}}
{{- $v := $V.gateway -}}
{{- if lt (int $v.replicaCount) 2 -}}
{{- fail "gateway.replicaCount must be at least 2" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.minReplicas) 2) -}}
{{- fail "gateway.autoscaling.minReplicas must be at least 2" -}}
{{- end -}}
{{- $tunnels := list -}}
{{- range $V.tunnels -}}
{{- if not .servers -}}
{{- fail (printf "tunnels: tunnel %q has no servers" .name) -}}
{{- end -}}
{{- $tunnels = append $tunnels (dict "name" .name "servers" .servers) -}}
{{- end -}}
{{- $relays := $v.relayAddresses -}}
{{- if not $relays -}}
{{- $relays = list (printf "%s:%d" $relayTunnelHost (int $V.relay.containerPorts.tunnel)) -}}
{{- end -}}
{{- $relayId := printf "spiffe://airlock/relay/%s" $V.relay.identity -}}
{{- $cfg := dict
  "listen" ""
  "ops_listen" (include "airlock.listen" (dict "root" $root "port" $v.containerPorts.ops))
  "log_level" $V.global.logLevel
  "tls" (deepCopy $tlsPaths)
  "relays" $relays
  "relay_identities" (list $relayId)
  "relay_keys" (list (dict "issuer" $relayId "public_key_file" "/etc/airlock/relay-grant/grant.pub"))
  "credstore" (dict "addr" (printf "%s:%d" $credstoreHost (int $V.credstore.service.port)))
  "tunnels" $tunnels
-}}
{{- $vols := list (dict "name" "relay-grant" "mountPath" "/etc/airlock/relay-grant" "source" (dict "secret" (dict "secretName" (default (printf "%s-relay-grant-key" $full) $V.relay.grantKey.existingSecret) "defaultMode" 292 "items" (list (dict "key" $V.relay.grantKey.pubKey "path" "grant.pub"))))) -}}
{{- $c := dict "name" "gateway" "component" "gateway" "pool" "" "kind" "Deployment" "binary" "airlock-gateway"
  "role" "gateway" "identity" $v.identity "v" $v "server" 0
  "ports" (list (dict "name" "ops" "port" $v.containerPorts.ops))
  "tlsSecret" (default (printf "%s-gateway-tls" $full) $V.tls.existingSecrets.gateway)
  "config" (include "airlock.deepMerge" (dict "base" $cfg "over" $v.config) | fromJson) "volumes" $vols "env" list "init" list -}}
{{- if $v.autoscaling.enabled }}{{ $_ := set $c "hpa" $v.autoscaling }}{{ end -}}
{{- if $v.pdb.enabled }}{{ $_ := set $c "pdb" $v.pdb }}{{ end -}}
{{- $items = append $items $c -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}
