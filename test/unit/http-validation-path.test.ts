import { describe, expect, it } from "vitest";
import { validationPath } from "../../app/http/errors.js";

describe("validationPath", () => {
  it("names the root as the part itself, array items by index and odd keys quoted", () => {
    expect(validationPath("body", "/")).toBe("body");
    expect(validationPath("body", "")).toBe("body");
    expect(validationPath("body", "/0")).toBe("body[0]");
    expect(validationPath("body", "/items/2/name")).toBe("body.items[2].name");
    expect(validationPath("querystring", "/limit")).toBe("querystring.limit");
    expect(validationPath("headers", "/if-match")).toBe("headers.if-match");
    expect(validationPath("body", "/devices/living room")).toBe('body.devices["living room"]');
  });
});
