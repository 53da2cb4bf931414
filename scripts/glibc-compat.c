/* glibc >= 2.38 names the C23 variants of these functions separately; LLVM libraries built
 * against it call them. Forwarded to the classic functions for older glibc (scripts/cuda-toolchain.sh). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
int __isoc23_sscanf(const char *s, const char *f, ...) {
  va_list a; va_start(a, f); int r = vsscanf(s, f, a); va_end(a); return r;
}
int __isoc23_scanf(const char *f, ...) {
  va_list a; va_start(a, f); int r = vscanf(f, a); va_end(a); return r;
}
