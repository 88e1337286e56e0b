{{/*
The one workload template: every component's StatefulSet or Deployment, its
pod, container, probes, volumes and security contexts come from here, so the
components cannot drift. ctx: dict "root" $ "c" <component from airlock.components>.
*/}}

{{/* Pod and container security contexts of a component: the chart defaults,
then the component's own, then (executor only) the sandbox host exception.
Output JSON {"pod": {...}, "container": {...}, "hostUsers": bool|absent}. */}}
{{- define "airlock.securityContexts" -}}
{{- $V := .root.Values -}}
{{- $c := .c -}}
{{- $pod := include "airlock.deepMerge" (dict "base" $V.podSecurityContext "over" $c.v.podSecurityContext) | fromJson -}}
{{- $ctr := include "airlock.deepMerge" (dict "base" $V.containerSecurityContext "over" $c.v.containerSecurityContext) | fromJson -}}
{{- $out := dict -}}
{{- if eq $c.component "executor" -}}
{{- $sh := $c.v.sandboxHost -}}
{{- /* The executor must be root (it writes user namespace id maps and job
cgroups) and create namespaces and mounts; README "What the executor needs
from the node" lists each need and how it was verified. */ -}}
{{- $pod = include "airlock.deepMerge" (dict "base" $pod "over" (dict "runAsNonRoot" false "runAsUser" 0 "runAsGroup" 0)) | fromJson -}}
{{- $_ := unset $pod "seccompProfile" -}}
{{- $ctr = include "airlock.deepMerge" (dict "base" $ctr "over" (dict "runAsNonRoot" false "runAsUser" 0 "runAsGroup" 0 "seccompProfile" $sh.seccompProfile "appArmorProfile" $sh.appArmorProfile)) | fromJson -}}
{{- if eq $sh.mode "privileged" -}}
{{- $_ := set $ctr "privileged" true -}}
{{- $_ := set $ctr "allowPrivilegeEscalation" true -}}
{{- $_ := set $ctr "capabilities" (dict "drop" (list "ALL") "add" (list "SYS_ADMIN" "SETUID" "SETGID")) -}}
{{- else if eq $sh.mode "userns" -}}
{{- $_ := set $ctr "capabilities" (dict "drop" (list "ALL") "add" $sh.capabilities) -}}
{{- $_ := set $ctr "procMount" "Unmasked" -}}
{{- $_ := set $out "hostUsers" false -}}
{{- else -}}
{{- fail (printf "executor.sandboxHost.mode %q: privileged or userns" $sh.mode) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "pod" $pod -}}
{{- $_ := set $out "container" $ctr -}}
{{- toJson $out -}}
{{- end -}}

{{- define "airlock.workload" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $v := $c.v -}}
{{- $full := include "airlock.fullname" $root -}}
{{- $configText := include "airlock.libconfig" $c.config -}}
{{- $sec := include "airlock.securityContexts" . | fromJson -}}
{{- $ops := 0 -}}
{{- range $c.ports }}{{ if eq .name "ops" }}{{ $ops = int .port }}{{ end }}{{ end -}}
apiVersion: apps/v1
kind: {{ $c.kind }}
metadata:
  name: {{ printf "%s-%s" $full $c.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "airlock.labels" (dict "root" $root "c" $c) | nindent 4 }}
  {{- include "airlock.annotations" (dict "root" $root "extra" $v.annotations "ind" 2) }}
spec:
  {{- if eq $c.kind "StatefulSet" }}
  serviceName: {{ printf "%s-%s-headless" $full $c.name }}
  replicas: 1
  podManagementPolicy: OrderedReady
  updateStrategy:
    type: RollingUpdate
  {{- else }}
  {{- if not (or $c.hpa $c.keda) }}
  replicas: {{ int $v.replicaCount }}
  {{- end }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "airlock.selectorLabels" (dict "root" $root "c" $c) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "airlock.labels" (dict "root" $root "c" $c) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ sha256sum $configText }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $ops | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "airlock.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- if hasKey $sec "hostUsers" }}
      hostUsers: {{ $sec.hostUsers }}
      {{- end }}
      {{- if and (eq $c.component "executor") $v.sandboxHost.runtimeClassName }}
      runtimeClassName: {{ $v.sandboxHost.runtimeClassName }}
      {{- end }}
      {{- with $root.Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ int $v.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $sec.pod | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $c.init }}
      initContainers:
        # The service refuses key files that group or others can read; a
        # Secret volume is group-readable (fsGroup), so the keys are copied
        # 0600 into memory owned by the service's user.
        - name: keys
          image: {{ include "airlock.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            {{- toYaml $c.init | nindent 12 }}
          securityContext:
            {{- toYaml $sec.container | nindent 12 }}
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
            limits:
              memory: 32Mi
          volumeMounts:
            {{- range $c.volumes }}
            {{- if .init }}
            - name: {{ .name }}
              mountPath: {{ .mountPath }}
            {{- end }}
            {{- end }}
      {{- end }}
      containers:
        - name: {{ $c.component }}
          image: {{ include "airlock.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["--config", "/etc/airlock/config/airlock.cfg"]
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- with $c.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- range $c.ports }}
            - name: {{ .name }}
              containerPort: {{ int .port }}
              protocol: TCP
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: ops
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 2
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $sec.container | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/airlock/config
              readOnly: true
            - name: tls
              mountPath: /etc/airlock/tls
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- range $c.volumes }}
            {{- if not (hasKey .source "projected") }}
            - name: {{ .name }}
              mountPath: {{ .mountPath }}
              {{- if or (hasKey .source "secret") (hasKey .source "configMap") }}
              readOnly: true
              {{- end }}
            {{- end }}
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ printf "%s-%s-config" $full $c.name }}
        - name: tls
          secret:
            secretName: {{ $c.tlsSecret }}
            defaultMode: 288
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- range $c.volumes }}
        {{- if not (hasKey .source "persistentVolumeClaim") }}
        - name: {{ .name }}
          {{- toYaml .source | nindent 10 }}
        {{- end }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  {{- if $c.persistence }}
  volumeClaimTemplates:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: data
        labels:
          {{- include "airlock.selectorLabels" (dict "root" $root "c" $c) | nindent 10 }}
        {{- with $c.persistence.annotations }}
        annotations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      spec:
        accessModes:
          {{- toYaml $c.persistence.accessModes | nindent 10 }}
        {{- with $c.persistence.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $c.persistence.size }}
  {{- end }}
{{- end -}}

{{- define "airlock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "airlock.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
