import { describe, expect, it } from "vitest";
import { encodeGrpcMessage } from "../../sidecar/http/http2/answers/grpc-message.ts";

describe("grpc-message encoding", () => {
  it("keeps printable ASCII, so clients show ':' and '/' as they are", () => {
    expect(encodeGrpcMessage("permission denied: GET /api/x (web-ingress/ingress/0)")).toBe(
      "permission denied: GET /api/x (web-ingress/ingress/0)",
    );
  });

  it("escapes '%', control characters and every byte of non-ASCII text", () => {
    const encoded = encodeGrpcMessage("100% refused\r\nü");
    expect(encoded).toBe("100%25 refused%0D%0A%C3%BC");
    expect(decodeURIComponent(encoded)).toBe("100% refused\r\nü");
  });
});
