package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
)

// projectLabel is the label Compose puts on the containers, images,
// volumes and networks of a project.
const projectLabel = "com.docker.compose.project"

// cleanupTimeout bounds the removal of a project when its test ends.
const cleanupTimeout = 2 * time.Minute

// cleanup takes the project down and removes whatever else is left of it
// (see SampleApp), and fails t if anything remains.
func (s *Sample) cleanup(t testing.TB) {
	// The test's context has ended by now.
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if out, err := s.run(ctx, "down", "-v", "--rmi", "local", "--remove-orphans", "--timeout", "5"); err != nil {
		// Not fatal: the sweep removes what down could not (when a test
		// left a broken compose file, say), and says what it could not.
		t.Logf("compose down of %s project %s: %v\n%s", s.Fixture, s.Project, err, out)
	}
	cli, err := dockerClient()
	if err != nil {
		t.Errorf("remove %s project %s: %v", s.Fixture, s.Project, err)
		return
	}
	defer cli.Close()
	if err := removeProject(ctx, cli, s.Project); err != nil {
		t.Errorf("remove %s project %s: %v", s.Fixture, s.Project, err)
	}
	left, err := projectLeftovers(ctx, cli, s.Project)
	switch {
	case err != nil:
		t.Errorf("list what is left of %s project %s: %v", s.Fixture, s.Project, err)
	case len(left) > 0:
		t.Errorf("%s project %s left behind:\n%s", s.Fixture, s.Project, strings.Join(left, "\n"))
	}
}

// dockerClient connects to the Docker Engine of the environment
// (DOCKER_HOST...), with API version negotiation (the engine here speaks
// API 1.41).
func dockerClient() (*client.Client, error) {
	return client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
}

// projectImage reports whether an image reference (repository[:tag]) is
// one of project's: its repository is <project>-... (the images Compose
// builds or names after the project) or berth-release/<project> (the
// worker's backup tags).
func projectImage(ref, project string) bool {
	repo := ref
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo = ref[:i]
	}
	return strings.HasPrefix(repo, project+"-") || repo == "berth-release/"+project
}

// projectResource reports whether a volume or network is project's:
// labelled with it, or named <project>_... as Compose names them.
func projectResource(name string, labels map[string]string, project string) bool {
	return labels[projectLabel] == project || strings.HasPrefix(name, project+"_")
}

func labelFilter(project string) filters.Args {
	return filters.NewArgs(filters.Arg("label", projectLabel+"="+project))
}

// removeProject removes the containers labelled with project (with their
// anonymous volumes; a service a rollback dropped from the compose files
// is not removed by `down`), the images named after it (projectImage), the
// images labelled with it (the untagged builds a rebuild left), and the
// volumes and networks labelled with it or named <project>_.... What is already gone is not an
// error.
func removeProject(ctx context.Context, cli *client.Client, project string) error {
	var errs []error
	keep := func(err error, what string) {
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}

	containers, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: labelFilter(project)})
	keep(err, "list containers")
	for _, c := range containers {
		keep(cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}),
			"remove container "+containerName(c))
	}

	// By name first, without force: removing a tag only untags an image
	// that has others.
	images, err := cli.ImageList(ctx, image.ListOptions{All: true})
	keep(err, "list images")
	for _, img := range images {
		for _, ref := range img.RepoTags {
			if projectImage(ref, project) {
				_, err := cli.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
				keep(err, "remove image "+ref)
			}
		}
	}
	// Then what the project built and is still there, untagged or not: the
	// label is the project's alone, so force is safe.
	images, err = cli.ImageList(ctx, image.ListOptions{All: true, Filters: labelFilter(project)})
	keep(err, "list labelled images")
	for _, img := range images {
		_, err := cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		keep(err, "remove image "+img.ID)
	}

	vols, err := cli.VolumeList(ctx, volume.ListOptions{})
	keep(err, "list volumes")
	for _, v := range vols.Volumes {
		if projectResource(v.Name, v.Labels, project) {
			keep(cli.VolumeRemove(ctx, v.Name, true), "remove volume "+v.Name)
		}
	}

	nets, err := cli.NetworkList(ctx, network.ListOptions{})
	keep(err, "list networks")
	for _, n := range nets {
		if projectResource(n.Name, n.Labels, project) {
			keep(cli.NetworkRemove(ctx, n.ID), "remove network "+n.Name)
		}
	}
	return errors.Join(errs...)
}

// projectLeftovers lists what is left of project: containers, images,
// volumes and networks labelled with it, and images, volumes and networks
// named after it.
func projectLeftovers(ctx context.Context, cli *client.Client, project string) ([]string, error) {
	var left []string
	containers, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: labelFilter(project)})
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		left = append(left, fmt.Sprintf("container %s (%s)", containerName(c), c.State))
	}
	images, err := cli.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		return nil, err
	}
	for _, img := range images {
		labelled := img.Labels[projectLabel] == project
		for _, ref := range img.RepoTags {
			if projectImage(ref, project) {
				left = append(left, "image "+ref)
				labelled = false // said
			}
		}
		if labelled {
			left = append(left, "image "+img.ID)
		}
	}
	vols, err := cli.VolumeList(ctx, volume.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, v := range vols.Volumes {
		if projectResource(v.Name, v.Labels, project) {
			left = append(left, "volume "+v.Name)
		}
	}
	nets, err := cli.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		if projectResource(n.Name, n.Labels, project) {
			left = append(left, "network "+n.Name)
		}
	}
	return left, nil
}

func containerName(c container.Summary) string {
	if len(c.Names) > 0 {
		return strings.TrimPrefix(c.Names[0], "/")
	}
	return c.ID
}
