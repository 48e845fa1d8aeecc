package handlers

import (
	"cmp"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-ops/berth"
)

// Widening is a compose setting of a release that gives a service more
// reach over the host than production's compose files gave it.
type Widening struct {
	Service string `json:"service"`
	// Setting names it: privileged, network_mode, pid, ipc, devices,
	// cap_add, security_opt, bind_mount or docker_socket.
	Setting string `json:"setting"`
	// Value is the setting as the release declares it: "true" for
	// privileged; the mode for network_mode, pid and ipc (a join followed
	// to the host reads "service:vpn (host)"); the device mapping; the
	// capability without its CAP_ prefix; the security option; for a
	// mount "source:target", with ":ro" when it is read-only (a read-only
	// mount is reach all the same).
	Value string `json:"value"`
	// New is set for a service production did not have.
	New bool `json:"new,omitempty"`
}

// String is the widening on one line, as a refusal names it.
func (w Widening) String() string {
	s := w.Service + ": " + w.Setting + " " + w.Value
	if w.New {
		s += " (new service)"
	}
	return s
}

// The settings of a Widening.
const (
	widenPrivileged   = "privileged"
	widenNetworkMode  = "network_mode"
	widenPid          = "pid"
	widenIpc          = "ipc"
	widenDevices      = "devices"
	widenCapAdd       = "cap_add"
	widenSecurityOpt  = "security_opt"
	widenBindMount    = "bind_mount"
	widenDockerSocket = "docker_socket"
)

// privilegeWidenings lists what after (the release's compose model, read in
// afterDir) grants that before (production's, read in beforeDir; nil when
// production has none yet) did not, sorted by service, setting and value,
// without duplicates; nil when nothing widens. What grants reach:
//
//   - privileged: true.
//   - network_mode, pid or ipc "host"; or a join ("service:x",
//     "container:x") that leads, through the release's services, to a
//     service in host mode; or "container:x" naming a container that is
//     none of the release's services (Berth cannot see what it is: another
//     project's, or one in host mode). A join of another of the project's
//     services that is not in host mode is not a widening.
//   - a device, the host side compared; a device production had with
//     fewer cgroup permissions (r, w, m; rwm when left out) widens too.
//   - a capability in cap_add, ALL included, except those Docker grants
//     every container anyway (CHOWN, NET_BIND_SERVICE, ...): adding one of
//     them back after cap_drop is hardening, not reach.
//   - a security_opt that lifts a protection: apparmor=unconfined,
//     seccomp=unconfined, seccomp=<a profile file> (Berth does not read the
//     profile; a file of the workspace can allow every system call),
//     label=disable, label=type:spc_t or label=type:unconfined_t,
//     no-new-privileges=false, systempaths=unconfined,
//     writable-cgroups=true; with "=" or the deprecated ":" separator,
//     which Docker still accepts.
//   - a bind mount whose source is outside the project: a relative source
//     is inside unless ".." takes it out; an absolute one is inside when
//     it is under afterDir or beforeDir (the workspace, or production
//     where the release will run: `docker compose config` writes sources
//     resolved against the directory it ran in). Outside sources are
//     compared as absolute paths (/var/run as /run); one under a source
//     production already mounted, read-write or both read-only, is not a
//     widening.
//   - a mount, of any type, of the Docker socket (/var/run/docker.sock,
//     /run/docker.sock, any file named docker.sock, or a directory above
//     the standard socket: /, /run, /var/run), or of the docker_engine
//     named pipe: it is root on the host, read-only or not. A directory
//     above the socket is also a bind_mount.
//
// A service production ran privileged had every capability, device and
// security_opt already: only its namespaces and mounts can widen. A
// setting production already had for the same service is not a widening;
// a service production did not have widens with New set; a removed
// service widens nothing.
func privilegeWidenings(before, after *berth.ComposeModel, beforeDir, afterDir string) []Widening {
	if after == nil {
		return nil
	}
	dirs := widenProjectDirs(beforeDir, afterDir)
	var out []Widening
	for _, name := range after.ServiceNames() {
		granted := widenGrants(after, after.Services[name], afterDir, dirs)
		var had []widenGrant
		isNew := true
		if before != nil {
			if b, ok := before.Services[name]; ok {
				isNew = false
				had = widenGrants(before, b, beforeDir, dirs)
			}
		}
		for _, g := range granted {
			if !isNew && widenCovered(g, had) {
				continue
			}
			out = append(out, Widening{Service: name, Setting: g.setting, Value: g.value, New: isNew})
		}
	}
	slices.SortFunc(out, func(a, b Widening) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Setting, b.Setting), cmp.Compare(a.Value, b.Value))
	})
	return slices.Compact(out)
}

// widenGrant is one grant of reach by a service's settings.
type widenGrant struct {
	setting string
	// value is what the plan shows; key what is compared with
	// production's grants.
	value, key string
	// perms are a device's cgroup permissions; for a bind mount, "ro" or
	// "rw".
	perms string
}

// widenCovered says whether production's grants had already given g.
func widenCovered(g widenGrant, had []widenGrant) bool {
	privileged := slices.ContainsFunc(had, func(h widenGrant) bool { return h.setting == widenPrivileged })
	switch g.setting {
	case widenCapAdd, widenDevices, widenSecurityOpt:
		if privileged {
			return true
		}
	}
	var perms string // a device's permissions production granted
	for _, h := range had {
		if h.setting != g.setting {
			continue
		}
		switch g.setting {
		case widenCapAdd:
			if h.key == g.key || h.key == "ALL" {
				return true
			}
		case widenDevices:
			if h.key == g.key {
				perms += h.perms
			}
		case widenBindMount:
			if widenPathWithin(g.key, h.key) && (g.perms == "ro" || h.perms == "rw") {
				return true
			}
		default:
			if h.key == g.key {
				return true
			}
		}
	}
	if g.setting == widenDevices && perms != "" {
		return !strings.ContainsFunc(g.perms, func(r rune) bool { return !strings.ContainsRune(perms, r) })
	}
	return false
}

// widenGrants lists the reach service s of model m grants; dir is the
// directory m was read in, dirs the project's directories.
func widenGrants(m *berth.ComposeModel, s berth.ComposeService, dir string, dirs []string) []widenGrant {
	var gs []widenGrant
	if s.Privileged {
		gs = append(gs, widenGrant{setting: widenPrivileged, value: "true", key: "true"})
	}
	for _, ns := range []string{widenNetworkMode, widenPid, widenIpc} {
		mode := widenNamespaceMode(s, ns)
		if key := widenNamespaceReach(m, ns, mode); key != "" {
			value := mode
			if key != mode {
				value += " (" + key + ")"
			}
			gs = append(gs, widenGrant{setting: ns, value: value, key: key})
		}
	}
	for _, d := range s.Devices {
		src, perms := widenParseDevice(d)
		gs = append(gs, widenGrant{setting: widenDevices, value: d, key: src, perms: perms})
	}
	for _, c := range s.CapAdd {
		c = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
		if c != "" && !widenDefaultCaps[c] {
			gs = append(gs, widenGrant{setting: widenCapAdd, value: c, key: c})
		}
	}
	for _, o := range s.SecurityOpt {
		if key := widenSecurityOptKey(o); key != "" {
			gs = append(gs, widenGrant{setting: widenSecurityOpt, value: o, key: key})
		}
	}
	for _, v := range s.Volumes {
		gs = append(gs, widenMountGrants(v, dir, dirs)...)
	}
	return gs
}

// widenNamespaceMode is s's mode for namespace setting ns.
func widenNamespaceMode(s berth.ComposeService, ns string) string {
	switch ns {
	case widenNetworkMode:
		return s.NetworkMode
	case widenPid:
		return s.Pid
	}
	return s.Ipc
}

// widenNamespaceReach is what namespace mode of setting ns reaches in
// model m: "host", "container:<name>" for a container outside the
// project, or "" for nothing beyond the project. Joins of the project's
// services are followed.
func widenNamespaceReach(m *berth.ComposeModel, ns, mode string) string {
	seen := map[string]bool{}
	for {
		var name string
		switch {
		case mode == "host":
			return "host"
		case strings.HasPrefix(mode, "service:"):
			name = strings.TrimPrefix(mode, "service:")
		case strings.HasPrefix(mode, "container:"):
			c := strings.TrimPrefix(mode, "container:")
			if name = widenServiceOfContainer(m, c); name == "" {
				return "container:" + c
			}
		default:
			return ""
		}
		s, ok := m.Services[name]
		if !ok || seen[name] {
			return "" // Compose refuses an unknown service or a cycle
		}
		seen[name] = true
		mode = widenNamespaceMode(s, ns)
	}
}

// widenServiceOfContainer returns the service of m whose container is
// named c (its container_name, or the name Compose gives it:
// <project>-<service>-<n>), or "".
func widenServiceOfContainer(m *berth.ComposeModel, c string) string {
	for _, name := range m.ServiceNames() {
		if m.Services[name].ContainerName == c {
			return name
		}
	}
	rest, ok := strings.CutPrefix(c, m.Name+"-")
	if m.Name == "" || !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return ""
	}
	if _, err := strconv.Atoi(rest[i+1:]); err != nil {
		return ""
	}
	if _, ok := m.Services[rest[:i]]; ok {
		return rest[:i]
	}
	return ""
}

// widenParseDevice returns the host side of device mapping d
// ("source[:target][:permissions]") and its permissions (rwm when left
// out).
func widenParseDevice(d string) (source, perms string) {
	parts := strings.Split(d, ":")
	source, perms = parts[0], "rwm"
	switch {
	case len(parts) >= 3:
		perms = parts[2]
	case len(parts) == 2 && widenIsDevicePerms(parts[1]):
		perms = parts[1] // "source:permissions"
	}
	if strings.HasPrefix(source, "/") {
		source = filepath.Clean(source)
	}
	return source, perms
}

func widenIsDevicePerms(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r != 'r' && r != 'w' && r != 'm' })
}

// widenDefaultCaps are the capabilities Docker grants every container.
var widenDefaultCaps = map[string]bool{
	"CHOWN": true, "DAC_OVERRIDE": true, "FSETID": true, "FOWNER": true,
	"MKNOD": true, "NET_RAW": true, "SETGID": true, "SETUID": true,
	"SETFCAP": true, "SETPCAP": true, "NET_BIND_SERVICE": true,
	"SYS_CHROOT": true, "KILL": true, "AUDIT_WRITE": true,
}

// widenSecurityOptKey returns security option o, written key=value, when
// it lifts a protection, or "". Docker splits an option at its first "="
// or, when it has none, at its first ":".
func widenSecurityOptKey(o string) string {
	o = strings.TrimSpace(o)
	if o == "disable" { // the daemon takes it for label=disable
		return "label=disable"
	}
	k, v, ok := strings.Cut(o, "=")
	if !ok {
		if k, v, ok = strings.Cut(o, ":"); !ok {
			return ""
		}
	}
	lifts := false
	switch k {
	case "apparmor", "systempaths":
		lifts = v == "unconfined"
	case "seccomp":
		lifts = v != "" && v != "builtin"
	case "label":
		lifts = v == "disable" || v == "type:spc_t" || v == "type:unconfined_t"
	case "no-new-privileges":
		b, err := strconv.ParseBool(v)
		lifts = err == nil && !b
	case "writable-cgroups":
		b, err := strconv.ParseBool(v)
		lifts = err == nil && b
	}
	if !lifts {
		return ""
	}
	return k + "=" + v
}

// widenSocketPath is the standard Docker socket, /var/run being /run.
const widenSocketPath = "/run/docker.sock"

// widenMountGrants lists the reach mount v grants; dir is the directory
// its model was read in, dirs the project's directories.
func widenMountGrants(v berth.ComposeVolume, dir string, dirs []string) []widenGrant {
	src := v.Source
	if src == "" {
		return nil
	}
	value := src + ":" + v.Target
	perms := "rw"
	if v.ReadOnly {
		value += ":ro"
		perms = "ro"
	}
	if v.Type == "npipe" || strings.HasPrefix(src, `\\`) {
		if strings.Contains(strings.ToLower(src), "docker_engine") {
			return []widenGrant{{setting: widenDockerSocket, value: value, key: `\\.\pipe\docker_engine`}}
		}
		return nil
	}
	pathLike := strings.HasPrefix(src, "/") || strings.HasPrefix(src, ".") || strings.HasPrefix(src, "~")
	if v.Type != "bind" && !pathLike {
		return nil // a named volume
	}
	p := widenHostPath(src, dir)
	key, inside := widenPathKey(p, dirs)
	var gs []widenGrant
	socketFile := key == widenSocketPath || filepath.Base(p) == "docker.sock"
	switch {
	case socketFile:
		gs = append(gs, widenGrant{setting: widenDockerSocket, value: value, key: key})
	case !inside && widenPathWithin(widenSocketPath, key):
		gs = append(gs, widenGrant{setting: widenDockerSocket, value: value, key: widenSocketPath})
	}
	if (v.Type == "bind" || v.Type == "") && !inside && !socketFile {
		gs = append(gs, widenGrant{setting: widenBindMount, value: value, key: key, perms: perms})
	}
	return gs
}

// widenHostPath resolves mount source src against dir, cleaned; a source
// under ~ is left as it is.
func widenHostPath(src, dir string) string {
	switch {
	case strings.HasPrefix(src, "~"):
		return src
	case filepath.IsAbs(src) || dir == "":
		return filepath.Clean(src)
	}
	return filepath.Join(dir, src)
}

// widenPathKey returns what compares host path p across directories:
// "./<relative>" when it is inside one of dirs (or relative and not
// escaping), its absolute path otherwise (/var/run as /run).
func widenPathKey(p string, dirs []string) (key string, inside bool) {
	if !filepath.IsAbs(p) {
		if strings.HasPrefix(p, "~") || p == ".." || strings.HasPrefix(p, "../") {
			return p, false
		}
		return filepath.Join(".", p), true
	}
	for _, d := range dirs {
		if widenPathWithin(p, d) {
			rel, _ := filepath.Rel(d, p)
			return filepath.Join(".", rel), true
		}
	}
	if p == "/var/run" || strings.HasPrefix(p, "/var/run/") {
		p = "/run" + strings.TrimPrefix(p, "/var/run")
	}
	return p, false
}

// widenPathWithin says whether path p is dir or under it.
func widenPathWithin(p, dir string) bool {
	return p == dir || dir == "/" && strings.HasPrefix(p, "/") || strings.HasPrefix(p, dir+"/")
}

// widenProjectDirs are the project's directories, absolute and cleaned.
func widenProjectDirs(dirs ...string) []string {
	var out []string
	for _, d := range dirs {
		if d != "" && filepath.IsAbs(d) {
			out = append(out, filepath.Clean(d))
		}
	}
	return out
}
