package cachetest

import (
	"strings"
	"testing"
	"time"
)

func TestStartRedisStopRestart(t *testing.T) {
	r := StartRedis(t)
	if reply, err := respDo(r.Addr(), time.Second, "SET", "k", "v"); err != nil || reply != "OK" {
		t.Fatalf("SET = %q, %v", reply, err)
	}
	r.Stop()
	if _, err := respDo(r.Addr(), 200*time.Millisecond, "PING"); err == nil {
		t.Fatal("PING answered after Stop")
	}
	r.Stop() // idempotent
	r.Restart()
	if reply, err := respDo(r.Addr(), time.Second, "PING"); err != nil || reply != "PONG" {
		t.Fatalf("PING after Restart = %q, %v", reply, err)
	}
	// --save "" and --appendonly no: a restarted server is empty.
	if reply, err := respDo(r.Addr(), time.Second, "DBSIZE"); err != nil || reply != "0" {
		t.Fatalf("DBSIZE after Restart = %q, %v; want 0", reply, err)
	}
}

func TestStartRedisCluster(t *testing.T) {
	addrs := StartRedisCluster(t)
	if len(addrs) != 3 {
		t.Fatalf("got %d addresses, want 3", len(addrs))
	}
	for _, a := range addrs {
		info, err := respDo(a, time.Second, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_known_nodes:3") {
			t.Errorf("CLUSTER INFO on %s = %v\n%s", a, err, info)
		}
	}
}
