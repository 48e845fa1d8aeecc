package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/berth-ops/berth/events"
)

// actionArgKeys are the argument keys each action takes (--arg KEY=…), as
// docs/protocol.md and docs/schemas/args/<action>.json list them; the
// shell completion offers them. A test keeps the two in step.
var actionArgKeys = map[string][]string{
	events.ActionConfigSet: {"workspace", "workspaces", "production", "compose_project", "compose_files", "compose_policy",
		"primary_service", "strategy", "require_second_approver", "stabilize_s", "drain_s", "start_first_with_volumes", "roles", "anonymous_viewers", "host"},
	events.ActionConfigGet:    nil,
	events.ActionConfigDelete: nil,
	events.ActionStatus:       {"refresh"},
	events.ActionLogs:         {"service", "tail", "since", "until", "timestamps", "grep", "follow_s"},
	events.ActionHistory:      {"limit"},
	events.ActionRestart:      {"services", "start_first"},
	events.ActionDeploy:       {"workspace"},
	events.ActionRollback:     {"to"},
	events.ActionReleases:     nil,
	events.ActionStart:        {"services"},
	events.ActionStop:         {"services"},
	events.ActionMove:         {"to"},
}

// fileFlags take a file name: the completion offers files.
var fileFlags = []string{"nats-creds", "creds", "nats-nkey", "nkey", "nats-tls-ca", "tls-ca",
	"nats-tls-cert", "tls-cert", "nats-tls-key", "tls-key", "sign-secret-file", "event-secret-file"}

// completionShells are the shells `publisher completion` writes a script for.
var completionShells = []string{"bash", "zsh", "fish"}

// runCompletion is `publisher completion SHELL`: it prints the script.
func runCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || !slices.Contains(completionShells, args[0]) {
		fmt.Fprintf(stderr, "usage: %s completion bash|zsh|fish\n", progName)
		fmt.Fprintf(stderr, "  bash: source <(%[1]s completion bash)   (or save it in /etc/bash_completion.d/%[1]s)\n", progName)
		fmt.Fprintf(stderr, "  zsh:  source <(%[1]s completion zsh)    (after compinit; or save it as _%[1]s in your $fpath)\n", progName)
		fmt.Fprintf(stderr, "  fish: %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish\n", progName)
		return exitUsage
	}
	io.WriteString(stdout, completionScript(args[0]))
	return exitOK
}

// completionFlags returns the publisher's flags: those taking a value and
// the boolean ones, by name, sorted.
func completionFlags() (valued, boolean []string) {
	o := &options{}
	var sec secretFlags
	var pairs stringList
	var argsJSON string
	fs := newFlagSet(o, &sec, &pairs, &argsJSON, func(string) string { return "" })
	fs.VisitAll(func(f *flag.Flag) {
		if isBoolFlag(f) {
			boolean = append(boolean, f.Name)
		} else {
			valued = append(valued, f.Name)
		}
	})
	return valued, boolean
}

// completionScript is the completion script for shell.
func completionScript(shell string) string {
	switch shell {
	case "bash":
		return bashCompletion()
	case "zsh":
		return zshCompletion()
	case "fish":
		return fishCompletion()
	}
	return ""
}

func dashed(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "--" + n
	}
	return out
}

func bashCompletion() string {
	valued, boolean := completionFlags()
	var b strings.Builder
	fmt.Fprintf(&b, `# bash completion for %[1]s: source <(%[1]s completion bash)
_%[1]s_arg_keys() {
  case "$1" in
`, progName)
	for _, a := range events.Actions() {
		fmt.Fprintf(&b, "    %s) echo %q ;;\n", a, strings.Join(actionArgKeys[a], " "))
	}
	fmt.Fprintf(&b, `  esac
}

_%[1]s() {
  local line="${COMP_LINE:0:COMP_POINT}" cur words=() w i action="" project="" prev="" skip=0
  local valued=" %[2]s "
  local files=" %[3]s "
  # Split the line at blanks only: readline splits at = and : as well.
  read -r -a words <<< "$line"
  if [[ "$line" =~ [[:space:]]$ ]]; then cur=""; else cur="${words[${#words[@]}-1]}"; unset 'words[${#words[@]}-1]'; fi
  for ((i = 1; i < ${#words[@]}; i++)); do
    w="${words[i]}"
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      --) ;;
      -*=*) ;;
      -*) w="${w#-}"; [[ "$valued" == *" ${w#-} "* ]] && skip=1 ;;
      *) if [[ -z "$action" ]]; then action="$w"; elif [[ -z "$project" ]]; then project="$w"; fi ;;
    esac
  done
  # prev: the flag whose value is being completed, without its dashes.
  if ((skip)); then prev="${words[${#words[@]}-1]#-}"; prev="${prev#-}"; fi

  local cands=() nospace=0 k
  if [[ -n "$prev" ]]; then
    case "$prev" in
      arg) for k in $(_%[1]s_arg_keys "$action"); do cands+=("$k="); done; nospace=1 ;;
      confirm) cands=(yes) ;;
      context) cands=($(ls "${XDG_CONFIG_HOME:-$HOME/.config}/nats/context" 2>/dev/null | sed -n 's/\.json$//p')) ;;
      *) if [[ "$files" == *" $prev "* ]]; then COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null; return 0; fi
         COMPREPLY=(); return 0 ;;
    esac
  elif [[ "$cur" == --arg=* || "$cur" == -arg=* ]]; then
    for k in $(_%[1]s_arg_keys "$action"); do cands+=("${cur%%%%=*}=$k="); done; nospace=1
  elif [[ "$cur" == -* ]]; then
    cands=(%[4]s)
  elif [[ -z "$action" ]]; then
    cands=(%[5]s completion)
  elif [[ "$action" == completion && -z "$project" ]]; then
    cands=(bash zsh fish)
  fi

  COMPREPLY=()
  local c pre=""
  # readline replaces only the part of the word after its last = or :.
  if [[ "$COMP_WORDBREAKS" == *=* && "$cur" == *=* ]] || [[ "$COMP_WORDBREAKS" == *:* && "$cur" == *:* ]]; then
    pre="${cur%%"${cur##*[=:]}"}"
  fi
  for c in "${cands[@]}"; do
    [[ "$c" == "$cur"* ]] && COMPREPLY+=("${c#"$pre"}")
  done
  ((nospace)) && compopt -o nospace 2>/dev/null
  return 0
}
complete -F _%[1]s %[1]s
`, progName, strings.Join(valued, " "), strings.Join(fileFlags, " "),
		strings.Join(append(dashed(valued), dashed(boolean)...), " "), strings.Join(events.Actions(), " "))
	return b.String()
}

func zshCompletion() string {
	valued, boolean := completionFlags()
	var b strings.Builder
	fmt.Fprintf(&b, `#compdef %[1]s
# zsh completion for %[1]s: source <(%[1]s completion zsh) after compinit,
# or save it as _%[1]s in a directory of $fpath.
_%[1]s() {
  local -A argkeys
  argkeys=(
`, progName)
	for _, a := range events.Actions() {
		fmt.Fprintf(&b, "    %s %q\n", a, strings.Join(actionArgKeys[a], " "))
	}
	fmt.Fprintf(&b, `  )
  local -a valued files flags actions
  valued=(%[2]s)
  files=(%[3]s)
  flags=(%[4]s)
  actions=(%[5]s completion)
  local action="" project="" w i skip=0
  for ((i = 2; i < CURRENT; i++)); do
    w=${words[i]}
    if ((skip)); then skip=0; continue; fi
    case $w in
      --) ;;
      -*=*) ;;
      -*) (( ${valued[(Ie)${${w#-}#-}]} )) && skip=1 ;;
      *) if [[ -z $action ]]; then action=$w; elif [[ -z $project ]]; then project=$w; fi ;;
    esac
  done
  local cur=${words[CURRENT]} prev=""
  ((skip)) && prev=${${words[CURRENT-1]#-}#-}
  if [[ -n $prev ]]; then
    case $prev in
      arg) compadd -S '' -- ${(s: :)^argkeys[$action]}= ;;
      confirm) compadd -- yes ;;
      context) local -a ctx; ctx=(${XDG_CONFIG_HOME:-$HOME/.config}/nats/context/*.json(N:t:r)); compadd -- $ctx ;;
      *) (( ${files[(Ie)$prev]} )) && _files ;;
    esac
    return
  fi
  if [[ $cur == -*arg=* ]]; then
    compset -P '*arg='
    compadd -S '' -- ${(s: :)^argkeys[$action]}=
  elif [[ $cur == -* ]]; then
    compadd -- $flags
  elif [[ -z $action ]]; then
    compadd -- $actions
  elif [[ $action == completion && -z $project ]]; then
    compadd -- bash zsh fish
  fi
}
if [[ "${funcstack[1]}" == "_%[1]s" ]]; then
  _%[1]s "$@"
else
  compdef _%[1]s %[1]s
fi
`, progName, strings.Join(valued, " "), strings.Join(fileFlags, " "),
		strings.Join(append(dashed(valued), dashed(boolean)...), " "), strings.Join(events.Actions(), " "))
	return b.String()
}

func fishCompletion() string {
	valued, boolean := completionFlags()
	var b strings.Builder
	fmt.Fprintf(&b, `# fish completion for %[1]s: %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish
function __%[1]s_words
    # The action and project: the first two words that are neither flags
    # nor values of flags.
    set -l valued %[2]s
    set -l toks (commandline -opc)
    set -e toks[1]
    set -l skip 0
    for w in $toks
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
            case '--' '-*=*'
            case '-*'
                if contains -- (string replace -r '^-+' '' -- $w) $valued
                    set skip 1
                end
            case '*'
                echo $w
        end
    end
end

function __%[1]s_needs_action
    test (count (__%[1]s_words)) -eq 0
end

function __%[1]s_completing_shell
    set -l w (__%[1]s_words)
    test (count $w) -eq 1 -a "$w[1]" = completion
end

function __%[1]s_arg_keys
    set -l w (__%[1]s_words)
    switch "$w[1]"
`, progName, strings.Join(valued, " "))
	for _, a := range events.Actions() {
		keys := actionArgKeys[a]
		if len(keys) == 0 {
			continue
		}
		fmt.Fprintf(&b, "        case %s\n            printf '%%s=\\n' %s\n", a, strings.Join(keys, " "))
	}
	fmt.Fprintf(&b, `    end
end

function __%[1]s_contexts
    set -l dir $HOME/.config
    set -q XDG_CONFIG_HOME; and set dir $XDG_CONFIG_HOME
    for f in $dir/nats/context/*.json
        basename $f .json
    end
end

complete -c %[1]s -f
complete -c %[1]s -n __%[1]s_needs_action -a '%[2]s' -d action
complete -c %[1]s -n __%[1]s_needs_action -a completion -d 'print a shell completion script'
complete -c %[1]s -n __%[1]s_completing_shell -a 'bash zsh fish'
`, progName, strings.Join(events.Actions(), " "))
	for _, n := range valued {
		switch {
		case n == "arg":
			fmt.Fprintf(&b, "complete -c %[1]s -l arg -x -a '(__%[1]s_arg_keys)' -d 'an argument k=v'\n", progName)
		case n == "confirm":
			fmt.Fprintf(&b, "complete -c %s -l confirm -x -a yes -d 'confirm: yes or a token'\n", progName)
		case n == "context":
			fmt.Fprintf(&b, "complete -c %[1]s -l context -x -a '(__%[1]s_contexts)' -d 'a nats CLI context'\n", progName)
		case slices.Contains(fileFlags, n):
			fmt.Fprintf(&b, "complete -c %s -l %s -r -F\n", progName, n)
		case len(n) == 1:
			fmt.Fprintf(&b, "complete -c %s -s %s -x\n", progName, n)
		default:
			fmt.Fprintf(&b, "complete -c %s -l %s -x\n", progName, n)
		}
	}
	for _, n := range boolean {
		fmt.Fprintf(&b, "complete -c %s -l %s\n", progName, n)
	}
	return b.String()
}
