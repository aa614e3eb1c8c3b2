{
  "variables": {
    # The NFQUEUE datapath needs libnetfilter_queue + libmnl (Debian: libnetfilter-queue-dev libmnl-dev).
    # Without them the addon still builds, with original-destination lookup only, and reports the
    # fast path as unavailable at runtime instead of failing the whole install.
    "have_nfq": "<!(pkg-config --exists libnetfilter_queue libmnl && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "sigil_native",
      "sources": ["src/addon.cc", "src/original_dst.cc", "src/tcp_packet.cc", "src/packet_napi.cc", "src/peer_cred.cc", "src/thread_cpu.cc", "src/release_memory.cc", "src/warm_handshake.cc", "src/warm_handshake_napi.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"],
      "conditions": [
        [
          "have_nfq==1",
          {
            "sources": ["src/nfqueue.cc"],
            "defines": ["SIGIL_HAVE_NFQUEUE=1"],
            "cflags_cc": ["<!@(pkg-config --cflags libnetfilter_queue libmnl)"],
            "libraries": ["<!@(pkg-config --libs libnetfilter_queue libmnl)"]
          }
        ]
      ]
    }
  ]
}
