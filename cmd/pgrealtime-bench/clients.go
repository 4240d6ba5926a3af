package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The `clients` mode holds many WebSocket connections in a process of their
// own (the open-file limit is per process, and the load generator's CPU must
// be measurable apart from the server's). The parent drives it over
// stdin/stdout with one JSON object or command per line:
//
//	child → parent: {"event":"ready","connected":N,"failed":F,"error":"…"}
//	parent → child: reset | report | quit
//	child → parent (after reset): {"event":"ok"}
//	child → parent (after report): {"event":"report","hist":{…},"closed":C,"close_reason":"…"}

type clientsReady struct {
	Event     string  `json:"event"`
	Connected int     `json:"connected"`
	Failed    int     `json:"failed"`
	Error     string  `json:"error,omitempty"`
	Seconds   float64 `json:"seconds"`
}

type clientsReport struct {
	Event       string     `json:"event"`
	Hist        HistCounts `json:"hist"`
	Closed      int64      `json:"closed"`
	CloseReason string     `json:"close_reason,omitempty"`
}

func runClients(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("clients", flag.ContinueOnError)
	wsURL := fs.String("url", "", "WebSocket URL of pgrealtime (ws://127.0.0.1:PORT/realtime)")
	token := fs.String("token", "", "access token")
	n := fs.Int("n", 1, "connections to hold")
	topic := fs.String("topic", "bench.*", "topic every connection subscribes to")
	conc := fs.Int("concurrency", 64, "connections being opened at once")
	timeout := fs.Duration("connect-timeout", 3*time.Minute, "time allowed to open all connections")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *wsURL == "" || *n < 1 || *conc < 1 {
		return errors.New("clients: --url and a positive --n are required")
	}
	raiseFileLimit()
	// For profiling the load generator: a CPU profile of this process.
	if path := os.Getenv("PGREALTIME_BENCH_CLIENT_CPUPROFILE"); path != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid())); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		hist      atomic.Pointer[Hist]
		closed    atomic.Int64
		quitting  atomic.Bool
		mu        sync.Mutex
		firstErr  string
		closeWhy  string
		failed    int
		connected int
		conns     []*wsClient
	)
	hist.Store(new(Hist))
	start := time.Now()
	dialCtx, dialCancel := context.WithTimeout(ctx, *timeout)
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			cl, err := dialClient(dialCtx, *wsURL, *token)
			if err == nil {
				_, err = cl.subscribe(dialCtx, []string{*topic}, "", nil)
				if err != nil {
					cl.close()
				}
			}
			<-sem
			mu.Lock()
			if err != nil {
				failed++
				if firstErr == "" {
					firstErr = err.Error()
				}
			} else {
				connected++
				conns = append(conns, cl)
			}
			mu.Unlock()
			wg.Done()
			if err != nil {
				return
			}
			for {
				// No cancellable context: it costs an allocation and a
				// registration per read; quit closes the sockets instead.
				msg, err := cl.next(context.Background())
				if err != nil {
					if !quitting.Load() {
						closed.Add(1)
						mu.Lock()
						if closeWhy == "" {
							closeWhy = fmt.Sprintf("status %d: %v", websocket.CloseStatus(err), err)
						}
						mu.Unlock()
					}
					return
				}
				at := time.Now()
				if bytes.HasPrefix(msg, []byte(`{"type":"record_event"`)) || string(jsonField(msg, "type")) == "record_event" {
					if d, ok := eventLatency(msg, at); ok {
						hist.Load().Record(d)
					}
				}
			}
		}()
	}
	wg.Wait()
	dialCancel()
	out := json.NewEncoder(stdout)
	mu.Lock()
	ready := clientsReady{Event: "ready", Connected: connected, Failed: failed, Error: firstErr, Seconds: time.Since(start).Seconds()}
	mu.Unlock()
	if err := out.Encode(ready); err != nil {
		return err
	}

	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "reset":
			hist.Store(new(Hist))
			out.Encode(map[string]string{"event": "ok"})
		case "report":
			mu.Lock()
			r := clientsReport{Event: "report", Hist: hist.Load().Counts(), Closed: closed.Load(), CloseReason: closeWhy}
			mu.Unlock()
			out.Encode(r)
		case "quit":
			goto quit
		}
	}
quit:
	quitting.Store(true)
	mu.Lock()
	for _, cl := range conns {
		cl.close()
	}
	mu.Unlock()
	return nil
}

// clientProc is the parent's handle on a `clients` child process.
type clientProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
	Ready  clientsReady
	done   chan struct{}
}

// startClients spawns `<self> clients …` and waits until every connection
// is open and subscribed (or failed). It fails when fewer than all connect.
func startClients(ctx context.Context, self, wsURL, token string, n int, topic string) (*clientProc, error) {
	p := &clientProc{done: make(chan struct{})}
	p.cmd = exec.Command(self, "clients", "--url", wsURL, "--token", token, "--n", strconv.Itoa(n), "--topic", topic)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReaderSize(stdout, 1<<16)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client process: %w", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	if err := p.read(ctx, 4*time.Minute, &p.Ready); err != nil {
		p.kill()
		return nil, fmt.Errorf("client process: %w", err)
	}
	if p.Ready.Failed > 0 {
		p.kill()
		return nil, fmt.Errorf("client process: %d of %d connections failed: %s", p.Ready.Failed, n, p.Ready.Error)
	}
	return p, nil
}

// Pid is the child's process id.
func (p *clientProc) Pid() int { return p.cmd.Process.Pid }

func (p *clientProc) read(ctx context.Context, timeout time.Duration, v any) error {
	type res struct {
		line []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		line, err := p.out.ReadBytes('\n')
		ch <- res{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("%w (stderr: %s)", r.err, p.stderrTail())
		}
		return json.Unmarshal(r.line, v)
	case <-time.After(timeout):
		return fmt.Errorf("no answer within %s (stderr: %s)", timeout, p.stderrTail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *clientProc) stderrTail() string {
	s := p.stderr.String()
	if len(s) > 1000 {
		s = s[len(s)-1000:]
	}
	return strings.TrimSpace(s)
}

// reset clears the child's latency histogram and close counter.
func (p *clientProc) reset(ctx context.Context) error {
	if _, err := io.WriteString(p.in, "reset\n"); err != nil {
		return err
	}
	var ok map[string]string
	return p.read(ctx, 30*time.Second, &ok)
}

// report fetches the child's histogram since the last reset.
func (p *clientProc) report(ctx context.Context) (clientsReport, error) {
	var r clientsReport
	if _, err := io.WriteString(p.in, "report\n"); err != nil {
		return r, err
	}
	err := p.read(ctx, 30*time.Second, &r)
	return r, err
}

// quit closes the child's connections and waits for it to exit.
func (p *clientProc) quit() { quitChild(p.cmd, p.in, p.done, 20*time.Second) }

func (p *clientProc) kill() { killChild(p.cmd, p.done) }

// quitChild asks a child process driven over stdin to quit and waits for
// it (done is closed when it has exited), killing it after wait.
func quitChild(cmd *exec.Cmd, in io.WriteCloser, done <-chan struct{}, wait time.Duration) {
	io.WriteString(in, "quit\n")
	in.Close()
	select {
	case <-done:
	case <-time.After(wait):
		killChild(cmd, done)
	}
}

func killChild(cmd *exec.Cmd, done <-chan struct{}) {
	cmd.Process.Kill()
	<-done
}

// selfPath is the benchmark binary, re-executed in `clients` mode.
func selfPath() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary for client processes: %w", err)
	}
	return p, nil
}
