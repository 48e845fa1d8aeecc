package docker

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestComposePluginDirs(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "DOCKER_CONFIG" {
				return v
			}
			return ""
		}
	}
	system := []string{"/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
		"/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins"}
	if got := composePluginDirs(env("/etc/dc"), "/home/u"); !slices.Equal(got,
		append([]string{"/etc/dc/cli-plugins", "/home/u/.docker/cli-plugins"}, system...)) {
		t.Errorf("dirs %q", got)
	}
	if got := composePluginDirs(env(""), ""); !slices.Equal(got, system) {
		t.Errorf("dirs %q", got)
	}
}

func TestFindCompose(t *testing.T) {
	base := t.TempDir()
	dir := func(name string, mode os.FileMode) string {
		d := filepath.Join(base, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case mode.IsDir():
			if err := os.Mkdir(filepath.Join(d, "docker-compose"), 0o755); err != nil {
				t.Fatal(err)
			}
		case mode != 0:
			if err := os.WriteFile(filepath.Join(d, "docker-compose"), []byte("#!/bin/sh\n"), mode); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	missing, empty := filepath.Join(base, "missing"), dir("empty", 0)
	notExec, isDir := dir("noexec", 0o644), dir("isdir", os.ModeDir|0o755)
	plugin, later := dir("plugin", 0o755), dir("later", 0o755)

	standalone := "/opt/bin/docker-compose"
	found := func(string) (string, error) { return standalone, nil }
	notFound := func(string) (string, error) { return "", errors.New("not found") }
	version := func(v string) func(string) string {
		return func(p string) string {
			if p != standalone {
				t.Errorf("version of %s", p)
			}
			return v
		}
	}
	noVersion := func(p string) string { t.Errorf("version of %s", p); return "" }
	cli := []string{"docker", "compose"}

	for _, c := range []struct {
		name     string
		dirs     []string
		lookPath func(string) (string, error)
		version  func(string) string
		want     []string
	}{
		{"first executable plugin", []string{missing, empty, notExec, isDir, plugin, later}, found, noVersion,
			[]string{filepath.Join(plugin, "docker-compose")}},
		{"standalone v2", []string{missing, notExec}, found, version("2.26.1\n"), []string{standalone}},
		{"standalone v2 with a v", nil, found, version("v2.27.0"), []string{standalone}},
		{"standalone v10", nil, found, version("10.0.0"), []string{standalone}},
		{"python docker-compose", nil, found, version("1.29.2\n"), cli},
		{"standalone without a version", nil, found, version(""), cli},
		{"nothing", []string{empty}, notFound, noVersion, cli},
	} {
		if got := findCompose(c.dirs, c.lookPath, c.version); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestComposeVersion(t *testing.T) {
	if got := composeVersion(fakeDocker(t, `[ "$*" = "version --short" ] && echo 2.26.1-4`)); got != "2.26.1-4\n" {
		t.Errorf("version %q", got)
	}
	if got := composeVersion(fakeDocker(t, `echo 2.26.1; exit 1`)); got != "" {
		t.Errorf("version of a failing binary %q", got)
	}
	if got := composeVersion(filepath.Join(t.TempDir(), "none")); got != "" {
		t.Errorf("version of a missing binary %q", got)
	}
}
