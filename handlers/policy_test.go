package handlers

import (
	"reflect"
	"testing"

	"github.com/berth-ops/berth"
)

// The directories the policy tests read their models in.
const (
	policyProdDir = "/srv/prod/app"
	policyWsDir   = "/srv/ws/app"
)

// policyModel is a model of project "app" with services.
func policyModel(services ...berth.ComposeService) *berth.ComposeModel {
	m := &berth.ComposeModel{Name: "app", Services: map[string]berth.ComposeService{}}
	for _, s := range services {
		if s.Image == "" {
			s.Image = "example/" + s.Name
		}
		m.Services[s.Name] = s
	}
	return m
}

func policyBind(source, target string) berth.ComposeVolume {
	return berth.ComposeVolume{Type: "bind", Source: source, Target: target}
}

func policyBindRO(source, target string) berth.ComposeVolume {
	return berth.ComposeVolume{Type: "bind", Source: source, Target: target, ReadOnly: true}
}

// policyWeb is service "web" with settings.
func policyWeb(s berth.ComposeService) berth.ComposeService {
	s.Name = "web"
	return s
}

func TestPrivilegeWidenings(t *testing.T) {
	plain := policyModel(policyWeb(berth.ComposeService{}))
	for _, tc := range []struct {
		name          string
		before, after *berth.ComposeModel
		want          []Widening
	}{
		// privileged
		{"privileged added", plain,
			policyModel(policyWeb(berth.ComposeService{Privileged: true})),
			[]Widening{{Service: "web", Setting: "privileged", Value: "true"}}},
		{"privileged unchanged", policyModel(policyWeb(berth.ComposeService{Privileged: true})),
			policyModel(policyWeb(berth.ComposeService{Privileged: true})), nil},
		{"privileged dropped", policyModel(policyWeb(berth.ComposeService{Privileged: true})), plain, nil},

		// namespaces
		{"network_mode host", plain,
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "host"})),
			[]Widening{{Service: "web", Setting: "network_mode", Value: "host"}}},
		{"network_mode host unchanged", policyModel(policyWeb(berth.ComposeService{NetworkMode: "host"})),
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "host"})), nil},
		{"pid host", plain,
			policyModel(policyWeb(berth.ComposeService{Pid: "host"})),
			[]Widening{{Service: "web", Setting: "pid", Value: "host"}}},
		{"ipc host", plain,
			policyModel(policyWeb(berth.ComposeService{Ipc: "host"})),
			[]Widening{{Service: "web", Setting: "ipc", Value: "host"}}},
		{"modes that stay in the project", plain,
			policyModel(
				policyWeb(berth.ComposeService{NetworkMode: "bridge", Ipc: "shareable", Pid: "service:db"}),
				berth.ComposeService{Name: "db", ContainerName: "db-c", NetworkMode: "backend", Ipc: "private"},
				berth.ComposeService{Name: "side", NetworkMode: "service:db", Ipc: "container:app-web-1", Pid: "container:db-c"},
				berth.ComposeService{Name: "none", NetworkMode: "none"},
			), nil},
		{"join of a service in host mode", plain,
			policyModel(
				policyWeb(berth.ComposeService{NetworkMode: "service:vpn"}),
				berth.ComposeService{Name: "vpn", NetworkMode: "host"},
			),
			[]Widening{
				{Service: "vpn", Setting: "network_mode", Value: "host", New: true},
				{Service: "web", Setting: "network_mode", Value: "service:vpn (host)"},
			}},
		{"join followed through a chain and container names", plain,
			policyModel(
				policyWeb(berth.ComposeService{Pid: "container:proxy-c"}),
				berth.ComposeService{Name: "proxy", ContainerName: "proxy-c", Pid: "container:app-agent-1"},
				berth.ComposeService{Name: "agent", Pid: "host"},
			),
			[]Widening{
				{Service: "agent", Setting: "pid", Value: "host", New: true},
				{Service: "proxy", Setting: "pid", Value: "container:app-agent-1 (host)", New: true},
				{Service: "web", Setting: "pid", Value: "container:proxy-c (host)"},
			}},
		{"join of a container outside the project", plain,
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "container:other-db-1"})),
			[]Widening{{Service: "web", Setting: "network_mode", Value: "container:other-db-1"}}},
		{"join of a container outside the project unchanged",
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "container:other-db-1"})),
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "container:other-db-1"})), nil},
		{"host declared directly where production joined a host service",
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "service:vpn"}), berth.ComposeService{Name: "vpn", NetworkMode: "host"}),
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "host"}), berth.ComposeService{Name: "vpn", NetworkMode: "host"}), nil},
		{"join cycle", plain,
			policyModel(
				policyWeb(berth.ComposeService{Ipc: "service:a"}),
				berth.ComposeService{Name: "a", Ipc: "service:web"},
			), nil},

		// devices
		{"device added", plain,
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/fuse:/dev/fuse:rwm"}})),
			[]Widening{{Service: "web", Setting: "devices", Value: "/dev/fuse:/dev/fuse:rwm"}}},
		{"device unchanged, mapped elsewhere",
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/fuse:/dev/fuse"}})),
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/fuse:/dev/xfuse:rwm"}})), nil},
		{"device with more permissions",
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/sda:/dev/sda:r"}})),
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/sda:/dev/sda:rw"}})),
			[]Widening{{Service: "web", Setting: "devices", Value: "/dev/sda:/dev/sda:rw"}}},
		{"device with fewer permissions",
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/sda:/dev/sda:rwm"}})),
			policyModel(policyWeb(berth.ComposeService{Devices: []string{"/dev/sda:/dev/sda:r", "/dev/sda:r"}})), nil},

		// cap_add
		{"capability added", plain,
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"NET_ADMIN", "cap_sys_time"}})),
			[]Widening{
				{Service: "web", Setting: "cap_add", Value: "NET_ADMIN"},
				{Service: "web", Setting: "cap_add", Value: "SYS_TIME"},
			}},
		{"capability unchanged, spelt otherwise",
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"CAP_SYS_ADMIN"}})),
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"SYS_ADMIN", "sys_admin"}})), nil},
		{"capability listed twice", plain,
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"SYS_ADMIN", "CAP_SYS_ADMIN"}})),
			[]Widening{{Service: "web", Setting: "cap_add", Value: "SYS_ADMIN"}}},
		{"cap_add ALL", policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"NET_ADMIN"}})),
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"ALL"}})),
			[]Widening{{Service: "web", Setting: "cap_add", Value: "ALL"}}},
		{"production had ALL", policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"ALL"}})),
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"SYS_ADMIN", "NET_ADMIN"}})), nil},
		{"capabilities Docker grants anyway", plain,
			policyModel(policyWeb(berth.ComposeService{CapAdd: []string{"NET_BIND_SERVICE", "CHOWN", "CAP_SETUID"}})), nil},

		// security_opt
		{"security options that lift a protection", plain,
			policyModel(policyWeb(berth.ComposeService{SecurityOpt: []string{
				"seccomp=unconfined", "apparmor=unconfined", "label=disable", "no-new-privileges=false",
				"systempaths=unconfined", "writable-cgroups=true", "seccomp=./profile.json", "label=type:spc_t",
			}})),
			[]Widening{
				{Service: "web", Setting: "security_opt", Value: "apparmor=unconfined"},
				{Service: "web", Setting: "security_opt", Value: "label=disable"},
				{Service: "web", Setting: "security_opt", Value: "label=type:spc_t"},
				{Service: "web", Setting: "security_opt", Value: "no-new-privileges=false"},
				{Service: "web", Setting: "security_opt", Value: "seccomp=./profile.json"},
				{Service: "web", Setting: "security_opt", Value: "seccomp=unconfined"},
				{Service: "web", Setting: "security_opt", Value: "systempaths=unconfined"},
				{Service: "web", Setting: "security_opt", Value: "writable-cgroups=true"},
			}},
		{"security options with the colon separator", plain,
			policyModel(policyWeb(berth.ComposeService{SecurityOpt: []string{
				"seccomp:unconfined", "apparmor:unconfined", "label:disable", "no-new-privileges:false",
			}})),
			[]Widening{
				{Service: "web", Setting: "security_opt", Value: "apparmor:unconfined"},
				{Service: "web", Setting: "security_opt", Value: "label:disable"},
				{Service: "web", Setting: "security_opt", Value: "no-new-privileges:false"},
				{Service: "web", Setting: "security_opt", Value: "seccomp:unconfined"},
			}},
		{"security options that keep or add protections", plain,
			policyModel(policyWeb(berth.ComposeService{SecurityOpt: []string{
				"no-new-privileges:true", "no-new-privileges", "no-new-privileges=true", "seccomp=builtin",
				"label=user:USER", "label:level:s0:c100,c200", "apparmor=docker-default", "writable-cgroups=false",
			}})), nil},
		{"security option unchanged, other separator",
			policyModel(policyWeb(berth.ComposeService{SecurityOpt: []string{"label:disable", "seccomp=unconfined"}})),
			policyModel(policyWeb(berth.ComposeService{SecurityOpt: []string{"label=disable", "seccomp:unconfined"}})), nil},

		// privileged production covers capabilities, devices and security options
		{"production was privileged",
			policyModel(policyWeb(berth.ComposeService{Privileged: true})),
			policyModel(policyWeb(berth.ComposeService{
				CapAdd: []string{"SYS_ADMIN"}, Devices: []string{"/dev/kvm"}, SecurityOpt: []string{"apparmor=unconfined"},
				NetworkMode: "host", Volumes: []berth.ComposeVolume{policyBind("/etc", "/host-etc")},
			})),
			[]Widening{
				{Service: "web", Setting: "bind_mount", Value: "/etc:/host-etc"},
				{Service: "web", Setting: "network_mode", Value: "host"},
			}},

		// bind mounts
		{"binds inside the project", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{
				policyBind("./data", "/data"), policyBind("conf", "/conf"), policyBind(".", "/app"),
				policyBind(policyWsDir+"/cache", "/cache"), policyBind(policyProdDir+"/uploads", "/uploads"),
			}})), nil},
		{"binds outside the project", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{
				policyBind("/etc", "/host-etc"), policyBindRO("/srv/shared", "/shared"), policyBind("../other", "/other"),
				policyBind("./data/../../../escape", "/escape"), policyBind("~/secrets", "/secrets"),
			}})),
			[]Widening{
				{Service: "web", Setting: "bind_mount", Value: "../other:/other"},
				{Service: "web", Setting: "bind_mount", Value: "./data/../../../escape:/escape"},
				{Service: "web", Setting: "bind_mount", Value: "/etc:/host-etc"},
				{Service: "web", Setting: "bind_mount", Value: "/srv/shared:/shared:ro"},
				{Service: "web", Setting: "bind_mount", Value: "~/secrets:/secrets"},
			}},
		{"relative in production, absolute as compose config writes it in the workspace",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("./data", "/data"), policyBind("/etc/app", "/etc/app")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind(policyWsDir+"/data", "/data"), policyBind("/etc/app/", "/config")}})), nil},
		{"a relative source escaping the project is another path in each directory",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("../shared", "/shared")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("../shared", "/shared")}})),
			[]Widening{{Service: "web", Setting: "bind_mount", Value: "../shared:/shared"}}},
		{"an escaping source that is the same host path",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("../shared", "/shared")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/srv/prod/shared", "/shared")}})), nil},
		{"read-only where production had read-write",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/etc", "/host-etc")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBindRO("/etc", "/host-etc")}})), nil},
		{"read-write where production had read-only",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBindRO("/etc", "/host-etc")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/etc", "/host-etc")}})),
			[]Widening{{Service: "web", Setting: "bind_mount", Value: "/etc:/host-etc"}}},
		{"under a directory production mounted",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/srv/shared", "/shared")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBindRO("/srv/shared/a", "/a"), policyBind("/srv/shared/b", "/b")}})), nil},
		{"above a directory production mounted",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/srv/shared/a", "/a")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/srv/shared", "/shared"), policyBind("/srv/shared-other", "/o")}})),
			[]Widening{
				{Service: "web", Setting: "bind_mount", Value: "/srv/shared-other:/o"},
				{Service: "web", Setting: "bind_mount", Value: "/srv/shared:/shared"},
			}},
		{"mounted by another service in production",
			policyModel(policyWeb(berth.ComposeService{}), berth.ComposeService{Name: "db", Volumes: []berth.ComposeVolume{policyBind("/etc", "/host-etc")}}),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/etc", "/host-etc")}}), berth.ComposeService{Name: "db"}),
			[]Widening{{Service: "web", Setting: "bind_mount", Value: "/etc:/host-etc"}}},
		{"named volumes and tmpfs", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{
				{Type: "volume", Source: "data", Target: "/data"}, {Type: "volume", Target: "/anon"}, {Type: "tmpfs", Target: "/tmp"},
			}})), nil},

		// the Docker socket
		{"docker socket", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/var/run/docker.sock", "/var/run/docker.sock")}})),
			[]Widening{{Service: "web", Setting: "docker_socket", Value: "/var/run/docker.sock:/var/run/docker.sock"}}},
		{"docker socket read-only", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBindRO("/run/docker.sock", "/docker.sock")}})),
			[]Widening{{Service: "web", Setting: "docker_socket", Value: "/run/docker.sock:/docker.sock:ro"}}},
		{"docker socket as a named volume's source", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{{Type: "volume", Source: "/var/run/docker.sock", Target: "/s"}}})),
			[]Widening{{Service: "web", Setting: "docker_socket", Value: "/var/run/docker.sock:/s"}}},
		{"docker socket moved from /var/run to /run",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/var/run/docker.sock", "/var/run/docker.sock")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBindRO("/run/docker.sock", "/var/run/docker.sock")}})), nil},
		{"directories above the docker socket", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBindRO("/", "/host"), policyBind("/var/run", "/vr"), policyBind("/var", "/var-host")}})),
			[]Widening{
				{Service: "web", Setting: "bind_mount", Value: "/:/host:ro"},
				{Service: "web", Setting: "bind_mount", Value: "/var/run:/vr"},
				{Service: "web", Setting: "bind_mount", Value: "/var:/var-host"},
				{Service: "web", Setting: "docker_socket", Value: "/:/host:ro"},
				{Service: "web", Setting: "docker_socket", Value: "/var/run:/vr"},
			}},
		{"another daemon's socket and the named pipe", plain,
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{
				policyBind("/run/user/1000/docker.sock", "/var/run/docker.sock"),
				{Type: "npipe", Source: `\\.\pipe\docker_engine`, Target: `\\.\pipe\docker_engine`},
			}})),
			[]Widening{
				{Service: "web", Setting: "docker_socket", Value: "/run/user/1000/docker.sock:/var/run/docker.sock"},
				{Service: "web", Setting: "docker_socket", Value: `\\.\pipe\docker_engine:\\.\pipe\docker_engine`},
			}},
		{"a rootless daemon's socket does not cover the host's",
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/run/user/1000/docker.sock", "/var/run/docker.sock")}})),
			policyModel(policyWeb(berth.ComposeService{Volumes: []berth.ComposeVolume{policyBind("/var/run/docker.sock", "/var/run/docker.sock")}})),
			[]Widening{{Service: "web", Setting: "docker_socket", Value: "/var/run/docker.sock:/var/run/docker.sock"}}},

		// services added and removed
		{"new service", plain,
			policyModel(policyWeb(berth.ComposeService{}), berth.ComposeService{
				Name: "agent", Privileged: true, Pid: "host", Volumes: []berth.ComposeVolume{policyBind("/var/run/docker.sock", "/var/run/docker.sock")},
			}),
			[]Widening{
				{Service: "agent", Setting: "docker_socket", Value: "/var/run/docker.sock:/var/run/docker.sock", New: true},
				{Service: "agent", Setting: "pid", Value: "host", New: true},
				{Service: "agent", Setting: "privileged", Value: "true", New: true},
			}},
		{"new service without reach", plain,
			policyModel(policyWeb(berth.ComposeService{}), berth.ComposeService{Name: "worker", Volumes: []berth.ComposeVolume{policyBind("./jobs", "/jobs")}}), nil},
		{"no production yet", nil,
			policyModel(policyWeb(berth.ComposeService{NetworkMode: "host", CapAdd: []string{"NET_ADMIN"}})),
			[]Widening{
				{Service: "web", Setting: "cap_add", Value: "NET_ADMIN", New: true},
				{Service: "web", Setting: "network_mode", Value: "host", New: true},
			}},
		{"service removed",
			policyModel(policyWeb(berth.ComposeService{}), berth.ComposeService{Name: "agent", Privileged: true, NetworkMode: "host"}),
			plain, nil},
		{"a service renamed is new",
			policyModel(berth.ComposeService{Name: "agent", Privileged: true}),
			policyModel(berth.ComposeService{Name: "agent2", Privileged: true}),
			[]Widening{{Service: "agent2", Setting: "privileged", Value: "true", New: true}}},
		{"no release model", plain, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := privilegeWidenings(tc.before, tc.after, policyProdDir, policyWsDir)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The same model, read in the same directory, widens nothing: production
// already had everything.
func TestPrivilegeWideningsOfItself(t *testing.T) {
	m := policyModel(
		policyWeb(berth.ComposeService{
			Privileged: true, NetworkMode: "host", Pid: "host", Ipc: "host",
			Devices: []string{"/dev/kvm"}, CapAdd: []string{"ALL"}, SecurityOpt: []string{"seccomp:unconfined"},
			Volumes: []berth.ComposeVolume{policyBind("/etc", "/host-etc"), policyBind("../x", "/x"), policyBind("/var/run/docker.sock", "/s")},
		}),
		berth.ComposeService{Name: "side", NetworkMode: "service:web", Ipc: "container:elsewhere"},
	)
	if got := privilegeWidenings(m, m, policyWsDir, policyWsDir); got != nil {
		t.Errorf("got %+v, want nothing", got)
	}
	if got := privilegeWidenings(m, m, policyProdDir, policyWsDir); len(got) != 1 || got[0].Value != "../x:/x" {
		t.Errorf("across directories got %+v, want only ../x:/x (another host path)", got)
	}
}

func TestWideningString(t *testing.T) {
	for _, tc := range []struct {
		w    Widening
		want string
	}{
		{Widening{Service: "web", Setting: "privileged", Value: "true"}, "web: privileged true"},
		{Widening{Service: "agent", Setting: "docker_socket", Value: "/run/docker.sock:/s:ro", New: true}, "agent: docker_socket /run/docker.sock:/s:ro (new service)"},
	} {
		if got := tc.w.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.w, got, tc.want)
		}
	}
}
