; DOSASM.COM: a hand-written DOS program that exercises what the V86
; monitor traps: port I/O, an interrupt handler of its own (INT 60h), a hook
; of INT 21h that chains on to DOS, and CLI/STI.
;
; It reads the keyboard controller's status port and COM1 (open bus: 0FFh),
; writes the POST diagnostic port, the PIC and a word to COM1 with
; interrupts disabled, installs an INT 60h handler and calls it three times,
; hooks INT 21h (counting the calls that pass through the hook before they
; reach DOS), prints how often the handler ran, restores both vectors and
; exits with the number of INT 21h calls its hook saw (2) -- or 1 if a port
; read did not return 0FFh.
;
; Build: nasm -f bin -o DOSASM.COM dosasm.asm

        org 100h

start:
        cli
        in al, 64h              ; keyboard controller status
        mov [status], al
        mov dx, 3F8h
        in al, dx               ; COM1 receive buffer
        and [status], al
        out 80h, al             ; POST diagnostic code
        mov al, 0Bh
        out 20h, al             ; PIC OCW3: read the in-service register
        mov dx, 3F8h
        mov ax, 1234h
        out dx, ax              ; a word write
        sti

        mov ax, 3560h           ; get the INT 60h vector
        int 21h
        mov [old60], bx
        mov [old60+2], es
        mov ax, 2560h           ; set it to our handler (DS:DX)
        mov dx, int60
        int 21h

        mov ax, 3521h           ; get the INT 21h vector
        int 21h
        mov [old21], bx
        mov [old21+2], es
        mov ax, 2521h           ; hook INT 21h
        mov dx, hook21
        int 21h

        mov cx, 3
.again:
        int 60h
        loop .again

        mov al, [count60]
        add al, '0'
        mov [digit], al
        mov ah, 09h             ; through the hook, then DOS
        mov dx, message
        int 21h

        push ds                 ; unhook INT 21h (through the hook itself)
        lds dx, [old21]
        mov ax, 2521h
        int 21h
        pop ds
        push ds                 ; restore INT 60h (straight to DOS now)
        lds dx, [old60]
        mov ax, 2560h
        int 21h
        pop ds

        cmp byte [status], 0FFh
        jne .bad
        mov al, [count21]
        mov ah, 4Ch
        int 21h
.bad:
        mov ax, 4C01h
        int 21h

; INT 60h: count the call, interrupts off around the update.
int60:
        pushf
        cli
        inc byte [cs:count60]
        popf
        iret

; INT 21h hook: count, then chain to the previous handler.
hook21:
        inc byte [cs:count21]
        jmp far [cs:old21]

status  db 0
count60 db 0
count21 db 0
old60   dd 0
old21   dd 0
message db 'INT 60h handler ran '
digit   db '0', ' times', 13, 10, '$'
