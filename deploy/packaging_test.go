// Package deploy_test checks the files that run Berth itself: the
// Dockerfile, compose.yml and the systemd unit (docs/running.md). No image
// is built here; what can be checked without a registry is.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/internal/testenv"
)

// repoFile is the path of a file at the repository root.
func repoFile(name string) string { return filepath.Join("..", name) }

// composeService is the part of `docker compose config --format json` the
// checks read.
type composeService struct {
	Image       string            `json:"image"`
	User        string            `json:"user"`
	GroupAdd    []string          `json:"group_add"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	SecurityOpt []string          `json:"security_opt"`
	CapDrop     []string          `json:"cap_drop"`
	Volumes     []struct {
		Type   string `json:"type"`
		Source string `json:"source"`
		Target string `json:"target"`
	} `json:"volumes"`
}

type composeConfig struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

// composeConfigJSON runs `docker compose config --format json` on
// compose.yml with env added to the environment.
func composeConfigJSON(t *testing.T, env ...string) composeConfig {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Unavailable(t, "docker CLI: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "compose", "-f", repoFile("compose.yml"), "config", "--format", "json")
	// A clean environment but for PATH and HOME: no variable of the
	// developer's shell changes what compose.yml resolves to.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "is not a docker command") {
			testenv.Unavailable(t, "docker compose plugin: %s", stderr.String())
		}
		t.Fatalf("docker compose config: %v\n%s", err, stderr.String())
	}
	var cfg composeConfig
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("compose config JSON: %v\n%s", err, out)
	}
	return cfg
}

func TestComposeWorkerService(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		apps string
	}{
		{"defaults", nil, "/srv/apps"},
		{"custom root", []string{"BERTH_APPS=/data/compose-projects", "DOCKER_GID=998"}, "/data/compose-projects"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := composeConfigJSON(t, tc.env...)
			w, ok := cfg.Services["worker"]
			if !ok {
				t.Fatalf("no worker service: %v", cfg.Services)
			}
			var socket, sameRoot, state bool
			for _, v := range w.Volumes {
				switch {
				case v.Type == "bind" && v.Source == "/var/run/docker.sock" && v.Target == "/var/run/docker.sock":
					socket = true
				case v.Type == "bind" && v.Source == tc.apps:
					// The daemon resolves a project's relative bind mounts
					// as host paths: inside the worker the path must be
					// the same.
					if v.Target != v.Source {
						t.Errorf("projects mounted at %s, from %s: must be the same path", v.Target, v.Source)
					}
					sameRoot = true
				case v.Type == "volume" && v.Target == "/var/lib/berth":
					state = true
				}
			}
			if !socket || !sameRoot || !state {
				t.Fatalf("worker volumes %+v: docker socket %v, projects at the same path %v, state volume %v",
					w.Volumes, socket, sameRoot, state)
			}
			if got := w.Environment["BERTH_ROOTS"]; got != tc.apps {
				t.Errorf("BERTH_ROOTS = %q, want the mounted root %q", got, tc.apps)
			}
			if w.Environment["BERTH_NATS_URL"] != "nats://nats:4222" || w.Environment["BERTH_REDIS_URL"] != "redis://redis:6379/0" {
				t.Errorf("worker not pointed at the stack's NATS and Redis: %v", w.Environment)
			}
			if w.User == "" || w.User == "root" || strings.HasPrefix(w.User, "0:") || w.User == "0" {
				t.Errorf("worker user %q: must be a non-root user", w.User)
			}
			if len(w.GroupAdd) != 1 || w.GroupAdd[0] == "" {
				t.Errorf("worker group_add %v: want the docker socket's group", w.GroupAdd)
			}
			if len(tc.env) > 1 && w.GroupAdd[0] != "998" {
				t.Errorf("group_add %v does not follow DOCKER_GID", w.GroupAdd)
			}
			if !slices.Contains(w.SecurityOpt, "no-new-privileges:true") || !slices.Contains(w.CapDrop, "ALL") {
				t.Errorf("worker security_opt %v cap_drop %v", w.SecurityOpt, w.CapDrop)
			}
		})
	}
}

func TestComposeNATSAndRedisPersist(t *testing.T) {
	cfg := composeConfigJSON(t)
	hasVolume := func(s composeService, target string) bool {
		return slices.ContainsFunc(s.Volumes, func(v struct {
			Type   string `json:"type"`
			Source string `json:"source"`
			Target string `json:"target"`
		}) bool {
			return v.Type == "volume" && v.Target == target && cfg.Volumes[v.Source] != nil
		})
	}
	nats := cfg.Services["nats"]
	cmd := strings.Join(nats.Command, " ")
	if !strings.Contains(cmd, "--jetstream") || !strings.Contains(cmd, "--store_dir /data") || !hasVolume(nats, "/data") {
		t.Errorf("nats: command %q volumes %+v: want JetStream with its store in a named volume", cmd, nats.Volumes)
	}
	redis := cfg.Services["redis"]
	cmd = strings.Join(redis.Command, " ")
	if !strings.Contains(cmd, "--appendonly yes") || !hasVolume(redis, "/data") {
		t.Errorf("redis: command %q volumes %+v: want AOF on, data in a named volume", cmd, redis.Volumes)
	}
}

// dockerfileStages splits a Dockerfile into stages: the instructions
// (keyword upper-cased, continuation lines joined) after each FROM.
func dockerfileStages(t *testing.T) [][][2]string {
	t.Helper()
	b, err := os.ReadFile(repoFile("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages [][][2]string
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		kw, rest, _ := strings.Cut(line, " ")
		kw = strings.ToUpper(kw)
		if kw == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], [2]string{kw, strings.TrimSpace(rest)})
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := dockerfileStages(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build[0][1], "golang:") {
		t.Errorf("builder stage FROM %q: want a golang image", build[0][1])
	}
	var buildText string
	for _, in := range build {
		buildText += in[0] + " " + in[1] + "\n"
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/worker"} {
		if !strings.Contains(buildText, want) {
			t.Errorf("builder stage lacks %q:\n%s", want, buildText)
		}
	}
	if final[0][1] != "docker:28-cli" {
		t.Errorf("final stage FROM %q: want docker:28-cli (docker CLI with the compose plugin)", final[0][1])
	}
	var user, entrypoint string
	var checksCompose bool
	for _, in := range final {
		switch in[0] {
		case "USER":
			user = in[1]
		case "ENTRYPOINT":
			entrypoint = in[1]
		case "RUN":
			checksCompose = checksCompose || strings.Contains(in[1], "docker compose version")
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if user == "" || name == "root" || name == "0" {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
	if !strings.Contains(entrypoint, "berth-worker") {
		t.Errorf("final stage ENTRYPOINT %q: want the worker", entrypoint)
	}
	if !checksCompose {
		t.Errorf("final stage does not check that the compose plugin is there")
	}
}

// unitSettings reads a systemd unit's Key=Value lines (the last of each
// key, as systemd mostly treats them; repeated keys are joined by spaces).
func unitSettings(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(repoFile("deploy/berth-worker.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("unit line %q is not Key=Value", line)
			continue
		}
		if m[k] != "" {
			v = m[k] + " " + v
		}
		m[k] = v
	}
	return m
}

func TestSystemdUnit(t *testing.T) {
	u := unitSettings(t)
	for k, want := range map[string]string{
		"NoNewPrivileges":     "yes",
		"ProtectSystem":       "strict",
		"PrivateTmp":          "yes",
		"ProtectHome":         "yes",
		"StateDirectory":      "berth",
		"SupplementaryGroups": "docker",
		"User":                "berth",
	} {
		if u[k] != want {
			t.Errorf("%s=%q, want %q", k, u[k], want)
		}
	}
	if u["ReadWritePaths"] == "" {
		t.Errorf("no ReadWritePaths: the worker could not write production directories")
	}
	if !strings.Contains(u["RestrictAddressFamilies"], "AF_UNIX") {
		t.Errorf("RestrictAddressFamilies=%q: the Docker socket needs AF_UNIX", u["RestrictAddressFamilies"])
	}
	if u["PrivateNetwork"] == "yes" || strings.Contains(u["InaccessiblePaths"], "/run") || strings.Contains(u["InaccessiblePaths"], "docker.sock") {
		t.Errorf("the unit hides the network or the Docker socket")
	}

	// systemd's own check, where systemd-analyze exists (it is optional:
	// not every machine that runs the tests has systemd). The binary it
	// would start is not installed here, so verify a copy that starts
	// /bin/true.
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found: unit not verified by systemd")
		return
	}
	b, _ := os.ReadFile(repoFile("deploy/berth-worker.service"))
	var unit []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			line = "ExecStart=/bin/true"
		}
		unit = append(unit, line)
	}
	path := filepath.Join(t.TempDir(), "berth-worker.service")
	if err := os.WriteFile(path, []byte(strings.Join(unit, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
