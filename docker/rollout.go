package docker

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/berth-ops/berth"
)

// ContainerNetworks says which networks a container is on, with its
// aliases there (what DisconnectContainer takes it off). A container
// that is gone is on none.
func (e *Engine) ContainerNetworks(ctx context.Context, id string) ([]berth.NetworkAttachment, error) {
	if err := e.ready(ctx); err != nil {
		return nil, err
	}
	in, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		mapped := e.mapErr(err, "inspect container "+shortID(id))
		if isCode(mapped, codeNotFound) {
			return nil, nil
		}
		return nil, mapped
	}
	if in.NetworkSettings == nil || in.HostConfig != nil && in.HostConfig.NetworkMode.IsContainer() {
		return nil, nil
	}
	var out []berth.NetworkAttachment
	for name, ep := range in.NetworkSettings.Networks {
		if name == "host" || name == "none" {
			continue
		}
		a := berth.NetworkAttachment{Network: name}
		if ep != nil {
			a.Aliases = slices.Clone(ep.Aliases)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b berth.NetworkAttachment) int { return strings.Compare(a.Network, b.Network) })
	return out, nil
}

// DisconnectContainer takes a container off the networks nets names, so
// that Docker's DNS stops returning it for its service name; networks it
// is not on, and a container that is gone, are no error.
func (e *Engine) DisconnectContainer(ctx context.Context, id string, nets []berth.NetworkAttachment) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	for _, a := range nets {
		if err := e.cli.NetworkDisconnect(ctx, a.Network, id, false); err != nil {
			mapped := e.mapErr(err, "disconnect "+shortID(id)+" from "+a.Network)
			if isCode(mapped, codeNotFound) || strings.Contains(err.Error(), "is not connected") {
				continue
			}
			return mapped
		}
	}
	return nil
}

// ReconnectContainer attaches a container again to the networks
// DisconnectContainer took it off, with the same aliases. Networks it is
// attached to already are left as they are.
func (e *Engine) ReconnectContainer(ctx context.Context, id string, nets []berth.NetworkAttachment) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	in, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return e.mapErr(err, "inspect container "+shortID(id))
	}
	for _, a := range nets {
		if in.NetworkSettings != nil {
			if _, ok := in.NetworkSettings.Networks[a.Network]; ok {
				continue
			}
		}
		cfg := &network.EndpointSettings{Aliases: a.Aliases}
		if err := e.cli.NetworkConnect(ctx, a.Network, id, cfg); err != nil {
			return e.mapErr(err, "connect "+shortID(id)+" to "+a.Network)
		}
	}
	return nil
}

// StartContainer starts a created or stopped container.
func (e *Engine) StartContainer(ctx context.Context, id string) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return e.mapErr(err, "start container "+shortID(id))
	}
	return nil
}

// RemoveContainer stops a container, giving its process grace to exit
// after SIGTERM (the engine's default when 0), and removes it with its
// anonymous volumes (named volumes stay). A container that is gone
// already is no error.
func (e *Engine) RemoveContainer(ctx context.Context, id string, grace time.Duration) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	opts := container.StopOptions{}
	if grace > 0 {
		s := int((grace + time.Second - 1) / time.Second)
		opts.Timeout = &s
	}
	if err := e.cli.ContainerStop(ctx, id, opts); err != nil {
		if mapped := e.mapErr(err, "stop container "+shortID(id)); !isCode(mapped, codeNotFound) {
			return mapped
		}
		return nil
	}
	if err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{RemoveVolumes: true}); err != nil {
		if mapped := e.mapErr(err, "remove container "+shortID(id)); !isCode(mapped, codeNotFound) {
			return mapped
		}
	}
	return nil
}
